package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
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
