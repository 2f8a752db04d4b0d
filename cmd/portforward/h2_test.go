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

// refuseAfter reads a stream's HEADERS, and at least waitData bytes of
// its DATA, then says GOAWAY naming stream 0 as the last processed: a
// draining server whose GOAWAY crossed a new stream.
func refuseAfter(waitData int) func(t *testing.T, fr *http2.Framer, c net.Conn) {
	return func(t *testing.T, fr *http2.Framer, c net.Conn) {
		opened := false
		if !readUntil(t, fr, func(f http2.Frame, got int) bool {
			if _, ok := f.(*http2.HeadersFrame); ok {
				opened = true
			}
			return opened && got >= waitData
		}) {
			return
		}
		fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	}
}

// h2Front is a local connection forwarded by the CLI over h2 to a fake
// daemon, through a scriptFront running scripts.
type h2Front struct {
	d    *fakeDaemon
	g    *scriptFront
	c    *cliRun
	conn *net.TCPConn // the local connection, with a deadline of failAfter
}

func startH2Front(t *testing.T, greeting string, scripts ...func(t *testing.T, fr *http2.Framer, c net.Conn)) *h2Front {
	t.Helper()
	d := startFakeDaemon(t, greeting)
	backend, err := url.Parse(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	g := startScriptFront(t, backend.Host, scripts...)
	c := startCLI(t, "--server", "http://"+g.ln.Addr().String(), "--transport", "h2", "--address", "127.0.0.1", "pod", ":80")
	conn, err := net.Dial("tcp4", "127.0.0.1:"+c.localPort(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(failAfter))
	return &h2Front{d: d, g: g, c: c, conn: conn.(*net.TCPConn)}
}

// scriptsRan waits until the front's scripts have all returned.
func (h *h2Front) scriptsRan(t *testing.T) {
	t.Helper()
	select {
	case <-h.g.done:
	case <-time.After(failAfter):
		t.Fatalf("the front's scripts did not all run within %v", failAfter)
	}
}

// TestH2StreamRefusedByGoawayIsSentAgain: a stream that a server's GOAWAY
// says it did not process (a draining daemon's GOAWAY crossing a new
// stream) is sent again on a new connection, with what the local client
// had sent on it, so the local connection goes on as if nothing happened.
// The pod never saw the refused stream, so nothing reaches it twice.
func TestH2StreamRefusedByGoawayIsSentAgain(t *testing.T) {
	t.Run("after the client's first bytes", func(t *testing.T) {
		h2RefusalCase(t, "", sentSome, refuseAfter(1))
	})
	t.Run("before the client sent anything", func(t *testing.T) {
		h2RefusalCase(t, "greeting\n", sentNothing, refuseAfter(0))
	})
}

// TestH2StreamRefusedAfterTooMuchIsNotSentAgain: a stream refused after
// its local client sent more than the CLI keeps for sending it again
// fails that connection, with a line that says why.
func TestH2StreamRefusedAfterTooMuchIsNotSentAgain(t *testing.T) {
	h := startH2Front(t, "", refuseAfter(h2ReplayMax+1))
	conn, c, d := h.conn, h.c, h.d
	go conn.Write(make([]byte, 2*h2ReplayMax)) // ends with an error once the CLI closes conn
	h.scriptsRan(t)
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

// TestH2StreamRefusedAtTheReplayCapIsSentAgain: a local client that sent
// exactly as much as the CLI keeps (h2ReplayMax) before the stream was
// refused has it all sent again; only a byte more is too much.
func TestH2StreamRefusedAtTheReplayCapIsSentAgain(t *testing.T) {
	h2RefusalCaseOf(t, h2ReplayMax, "", sentSome, refuseAfter(h2ReplayMax))
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

// before is what the local client of h2RefusalCase has done when the
// front's scripts run.
type before int

const (
	sentSome    before = iota // sent its bytes, not its FIN
	sentAll                   // sent its bytes and half-closed
	sentNothing               // sends them, and half-closes, only after
)

// h2RefusalCase forwards one local connection through the CLI over h2
// to a fake daemon behind a scriptFront running scripts: the local client
// sends 100 KiB and half-closes (before or after the scripts ran, as
// when says), and must read the greeting and its bytes back, once and in
// order, through one stream that reached the daemon.
func h2RefusalCase(t *testing.T, greeting string, when before, scripts ...func(t *testing.T, fr *http2.Framer, c net.Conn)) {
	h2RefusalCaseOf(t, 100<<10, greeting, when, scripts...)
}

// h2RefusalCaseOf is h2RefusalCase with a local client that sends size
// bytes.
func h2RefusalCaseOf(t *testing.T, size int, greeting string, when before, scripts ...func(t *testing.T, fr *http2.Framer, c net.Conn)) {
	h := startH2Front(t, greeting, scripts...)
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(rand.IntN(256))
	}
	send := func() {
		if _, err := h.conn.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	switch when {
	case sentSome:
		send()
		h.scriptsRan(t)
		h.conn.CloseWrite()
	case sentAll:
		send()
		h.conn.CloseWrite()
		h.scriptsRan(t)
	case sentNothing:
		h.scriptsRan(t)
		send()
		h.conn.CloseWrite()
	}
	got, err := io.ReadAll(h.conn)
	want := append([]byte(greeting), msg...)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("through the forward: read %d bytes, %v; want the greeting and the %d bytes sent, once, in order (equal: %v)", len(got), err, len(msg), bytes.Equal(got, want))
	}
	if s := h.c.stderr.String(); s != "" {
		t.Errorf("the CLI reported %q", s)
	}
	if n := len(h.d.uris); n != 1 {
		t.Errorf("the server got %d streams, want 1", n)
	}
}

// TestH2StreamRefusedTwiceIsSentAgain: the stream sent again is refused
// too (two draining daemons in turn): it is sent a third time, with all
// the bytes, once.
func TestH2StreamRefusedTwiceIsSentAgain(t *testing.T) {
	h2RefusalCase(t, "hi\n", sentSome, refuseByGoaway(false), refuseByGoaway(false))
}

// TestH2StreamRefusedAfterHalfCloseIsSentAgain: a local client that sent
// all it had and half-closed before the refusal: the stream sent again
// carries its bytes and ends.
func TestH2StreamRefusedAfterHalfCloseIsSentAgain(t *testing.T) {
	h2RefusalCase(t, "", sentAll, refuseByGoaway(true))
}

// TestH2StreamRefusedStreamIsSentAgain: RST_STREAM REFUSED_STREAM (the
// transport sends the stream again on the same connection), then that
// one refused by GOAWAY.
func TestH2StreamRefusedStreamIsSentAgain(t *testing.T) {
	h2RefusalCase(t, "", sentSome, func(t *testing.T, fr *http2.Framer, c net.Conn) {
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
