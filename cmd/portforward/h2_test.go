package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// goawayFront listens in front of a server. The first HTTP/2 connection it
// takes it answers itself, as a draining server whose GOAWAY crossed a new
// stream: it reads the stream's HEADERS (and, with waitData above 0, at
// least that many bytes of its DATA), then says GOAWAY naming stream 0 as the
// last it processed, and closes. Every other connection goes through to
// the server.
type goawayFront struct {
	ln        net.Listener
	backend   string
	waitData  int
	refused   atomic.Bool   // the GOAWAY was sent
	refusedCh chan struct{} // closed once it was
}

func startGoawayFront(t *testing.T, backend string, waitData int) *goawayFront {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	g := &goawayFront{ln: ln, backend: backend, waitData: waitData, refusedCh: make(chan struct{})}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go g.serve(t, c)
		}
	}()
	return g
}

func (g *goawayFront) serve(t *testing.T, c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(failAfter))
	first := make([]byte, len(http2.ClientPreface))
	n, _ := io.ReadFull(c, first)
	if n == len(first) && string(first) == http2.ClientPreface && g.refused.CompareAndSwap(false, true) {
		g.goaway(t, c)
		return
	}
	c.SetDeadline(time.Time{})
	b, err := net.Dial("tcp4", g.backend)
	if err != nil {
		return
	}
	defer b.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(c, b)
		close(done)
	}()
	if _, err := b.Write(first[:n]); err == nil {
		io.Copy(b, c)
	}
	b.(*net.TCPConn).CloseWrite()
	<-done
}

func (g *goawayFront) goaway(t *testing.T, c net.Conn) {
	defer close(g.refusedCh)
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Errorf("goaway front: %v", err)
		return
	}
	opened, got := false, 0
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Errorf("goaway front: before the stream it refuses: %v", err)
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			opened = true
		case *http2.DataFrame:
			if n := uint32(len(f.Data())); n > 0 {
				got += int(n)
				fr.WriteWindowUpdate(0, n)
				fr.WriteWindowUpdate(f.StreamID, n)
			}
		}
		if opened && got >= g.waitData {
			break
		}
	}
	if err := fr.WriteGoAway(0, http2.ErrCodeNo, nil); err != nil {
		t.Errorf("goaway front: %v", err)
		return
	}
	// As a server does, let the client read the GOAWAY before the
	// connection ends: a close with its data unread would reset it.
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
}

// TestH2StreamRefusedByGoawayIsSentAgain: a stream that a server's GOAWAY
// says it did not process (a draining daemon's GOAWAY crossing a new
// stream) is sent again on a new connection, with what the local client
// had sent on it, so the local connection goes on as if nothing happened.
// The pod never saw the refused stream, so nothing reaches it twice.
func TestH2StreamRefusedByGoawayIsSentAgain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		greeting string
		waitData int // the refused stream had carried this many of the local client's bytes
	}{
		{"after the client's first bytes", "", 1},
		{"before the client sent anything", "greeting\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startFakeDaemon(t, tc.greeting)
			backend, err := url.Parse(d.URL)
			if err != nil {
				t.Fatal(err)
			}
			g := startGoawayFront(t, backend.Host, tc.waitData)
			c := startCLI(t, "--server", "http://"+g.ln.Addr().String(), "--transport", "h2", "--address", "127.0.0.1", "pod", ":80")
			port := c.localPort(t)
			conn, err := net.Dial("tcp4", "127.0.0.1:"+port)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(failAfter))
			msg := strings.Repeat("0123456789", 1000)
			if tc.waitData > 0 {
				if _, err := io.WriteString(conn, msg); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-g.refusedCh:
			case <-time.After(failAfter):
				t.Fatalf("the front refused no stream within %v", failAfter)
			}
			if tc.waitData == 0 {
				if _, err := io.WriteString(conn, msg); err != nil {
					t.Fatal(err)
				}
			}
			conn.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(conn)
			if err != nil || !bytes.Equal(got, []byte(tc.greeting+msg)) {
				t.Fatalf("through the forward: read %d bytes (%q…), %v; want the greeting and the %d bytes sent, once", len(got), got[:min(len(got), 40)], err, len(msg))
			}
			select {
			case uri := <-d.uris:
				if !strings.Contains(uri, "port=80") {
					t.Errorf("the server got %q", uri)
				}
			default:
				t.Error("the server got no stream")
			}
			if s := c.stderr.String(); s != "" {
				t.Errorf("the CLI reported %q", s)
			}
		})
	}
}

// TestH2StreamRefusedAfterTooMuchIsNotSentAgain: a stream refused after
// its local client sent more than the CLI keeps for sending it again
// fails that connection, with a line that says why.
func TestH2StreamRefusedAfterTooMuchIsNotSentAgain(t *testing.T) {
	d := startFakeDaemon(t, "")
	backend, err := url.Parse(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	g := startGoawayFront(t, backend.Host, h2ReplayMax+1)
	c := startCLI(t, "--server", "http://"+g.ln.Addr().String(), "--transport", "h2", "--address", "127.0.0.1", "pod", ":80")
	port := c.localPort(t)
	conn, err := net.Dial("tcp4", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(failAfter))
	go conn.Write(make([]byte, 2*h2ReplayMax)) // ends with an error once the CLI closes conn
	select {
	case <-g.refusedCh:
	case <-time.After(failAfter):
		t.Fatalf("the front refused no stream within %v", failAfter)
	}
	if _, err := io.ReadAll(conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the CLI did not close the local connection: %v", err)
	}
	want := fmt.Sprintf("more than the %d that can be sent again", h2ReplayMax)
	c.stderr.waitFor(t, "…"+want, c.exited, func(s string) bool { return strings.Contains(s, want) })
	select {
	case uri := <-d.uris:
		t.Errorf("the stream went to the server again: %q", uri)
	default:
	}
}

// scriptFront listens in front of a server; the first len(scripts)
// HTTP/2 connections it takes are answered by scripts[i] (with a Framer
// whose SETTINGS it has sent), every other goes through to the server.
type scriptFront struct {
	ln      net.Listener
	backend string
	scripts []func(t *testing.T, fr *http2.Framer, c net.Conn)
	n       atomic.Int32  // HTTP/2 connections taken
	left    atomic.Int32  // scripts still to return
	done    chan struct{} // closed once the last script returned
}

func startScriptFront(t *testing.T, backend string, scripts ...func(t *testing.T, fr *http2.Framer, c net.Conn)) *scriptFront {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	g := &scriptFront{ln: ln, backend: backend, scripts: scripts, done: make(chan struct{})}
	g.left.Store(int32(len(scripts)))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go g.serve(t, c)
		}
	}()
	return g
}

func (g *scriptFront) serve(t *testing.T, c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(failAfter))
	first := make([]byte, len(http2.ClientPreface))
	n, _ := io.ReadFull(c, first)
	if n == len(first) && string(first) == http2.ClientPreface {
		if i := int(g.n.Add(1)) - 1; i < len(g.scripts) {
			fr := http2.NewFramer(c, c)
			if err := fr.WriteSettings(); err == nil {
				g.scripts[i](t, fr, c)
			}
			// As a server does, let the client read what was sent
			// before the connection ends.
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c)
			if g.left.Add(-1) == 0 {
				close(g.done)
			}
			return
		}
	}
	c.SetDeadline(time.Time{})
	b, err := net.Dial("tcp4", g.backend)
	if err != nil {
		return
	}
	defer b.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(c, b)
		close(done)
	}()
	if _, err := b.Write(first[:n]); err == nil {
		io.Copy(b, c)
	}
	b.(*net.TCPConn).CloseWrite()
	<-done
}

// readUntil reads frames, acknowledging SETTINGS and crediting DATA,
// until stop, given each frame and the DATA bytes read so far, says so;
// false (and a failed test) if the connection ended first.
func readUntil(t *testing.T, fr *http2.Framer, stop func(f http2.Frame, got int) bool) bool {
	got := 0
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Errorf("front: %v", err)
			return false
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			if n := uint32(len(f.Data())); n > 0 {
				got += int(n)
				fr.WriteWindowUpdate(0, n)
				fr.WriteWindowUpdate(f.StreamID, n)
			}
		}
		if stop(f, got) {
			return true
		}
	}
}

// refuseByGoaway reads a stream's HEADERS, and with wantEnd its
// END_STREAM (the local client half-closed), then says GOAWAY naming
// stream 0 as the last processed.
func refuseByGoaway(wantEnd bool) func(t *testing.T, fr *http2.Framer, c net.Conn) {
	return func(t *testing.T, fr *http2.Framer, c net.Conn) {
		if !readUntil(t, fr, func(f http2.Frame, got int) bool {
			switch f := f.(type) {
			case *http2.HeadersFrame:
				return !wantEnd || f.StreamEnded()
			case *http2.DataFrame:
				return wantEnd && f.StreamEnded()
			}
			return false
		}) {
			return
		}
		fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	}
}

// h2RefusalCase forwards one local connection through the CLI over h2
// to a fake daemon behind a scriptFront running scripts: the local client
// sends 100 KiB and half-closes (before the scripts ran with
// halfCloseFirst, else after), and must read the greeting and its bytes
// back, once and in order, through one stream that reached the daemon.
func h2RefusalCase(t *testing.T, greeting string, halfCloseFirst bool, scripts ...func(t *testing.T, fr *http2.Framer, c net.Conn)) {
	d := startFakeDaemon(t, greeting)
	backend, err := url.Parse(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	g := startScriptFront(t, backend.Host, scripts...)
	c := startCLI(t, "--server", "http://"+g.ln.Addr().String(), "--transport", "h2", "--address", "127.0.0.1", "pod", ":80")
	port := c.localPort(t)
	conn, err := net.Dial("tcp4", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(failAfter))
	msg := make([]byte, 100<<10)
	for i := range msg {
		msg[i] = byte(rand.IntN(256))
	}
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	if halfCloseFirst {
		conn.(*net.TCPConn).CloseWrite()
	}
	select {
	case <-g.done:
	case <-time.After(failAfter):
		t.Fatalf("the front's scripts did not all run within %v", failAfter)
	}
	if !halfCloseFirst {
		conn.(*net.TCPConn).CloseWrite()
	}
	got, err := io.ReadAll(conn)
	want := append([]byte(greeting), msg...)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("through the forward: read %d bytes, %v; want the greeting and the %d bytes sent, once, in order (equal: %v)", len(got), err, len(msg), bytes.Equal(got, want))
	}
	if s := c.stderr.String(); s != "" {
		t.Errorf("the CLI reported %q", s)
	}
	if n := len(d.uris); n != 1 {
		t.Errorf("the server got %d streams, want 1", n)
	}
}

// TestH2StreamRefusedTwiceIsSentAgain: the stream sent again is refused
// too (two draining daemons in turn): it is sent a third time, with all
// the bytes, once.
func TestH2StreamRefusedTwiceIsSentAgain(t *testing.T) {
	h2RefusalCase(t, "hi\n", false, refuseByGoaway(false), refuseByGoaway(false))
}

// TestH2StreamRefusedAfterHalfCloseIsSentAgain: a local client that sent
// all it had and half-closed before the refusal: the stream sent again
// carries its bytes and ends.
func TestH2StreamRefusedAfterHalfCloseIsSentAgain(t *testing.T) {
	h2RefusalCase(t, "", true, refuseByGoaway(true))
}

// TestH2StreamRefusedStreamIsSentAgain: RST_STREAM REFUSED_STREAM (the
// transport sends the stream again on the same connection), then that
// one refused by GOAWAY.
func TestH2StreamRefusedStreamIsSentAgain(t *testing.T) {
	h2RefusalCase(t, "", false, func(t *testing.T, fr *http2.Framer, c net.Conn) {
		var id uint32
		if !readUntil(t, fr, func(f http2.Frame, got int) bool {
			if h, ok := f.(*http2.HeadersFrame); ok {
				id = h.StreamID
			}
			return got > 0
		}) {
			return
		}
		fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		if !readUntil(t, fr, func(f http2.Frame, got int) bool {
			h, ok := f.(*http2.HeadersFrame)
			return ok && h.StreamID > id
		}) {
			return
		}
		fr.WriteGoAway(id, http2.ErrCodeNo, nil)
	})
}

// TestH2LargeUploadBeforeTheAnswer: a server that reads more than the CLI
// keeps before it answers gets every byte, in order.
func TestH2LargeUploadBeforeTheAnswer(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		first := make([]byte, h2ReplayMax+100<<10)
		n, err := io.ReadFull(r.Body, first)
		w.WriteHeader(http.StatusOK)
		w.Write(first[:n])
		if err != nil {
			return
		}
		http.NewResponseController(w).Flush()
		io.Copy(w, r.Body)
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	c := startCLI(t, "--server", srv.URL, "--transport", "h2", "--address", "127.0.0.1", "pod", ":80")
	port := c.localPort(t)
	conn, err := net.Dial("tcp4", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(failAfter))
	msg := make([]byte, 2*h2ReplayMax)
	for i := range msg {
		msg[i] = byte(rand.IntN(256))
	}
	go func() {
		conn.Write(msg)
		conn.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(conn)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes, %v; want the %d sent, in order", len(got), err, len(msg))
	}
}
