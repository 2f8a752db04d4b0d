package main

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (local, peer *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); p.Close() })
	return c.(*net.TCPConn), p.(*net.TCPConn)
}

// TestH2BodyReplacedReaderCloseLeavesTheNewOne: the transport may close
// the body of a refused stream after it asked for the body again; that
// Close must not end the read of the new reader, which carries the stream
// sent again: the local connection would fail with a timeout though
// nothing went wrong.
func TestH2BodyReplacedReaderCloseLeavesTheNewOne(t *testing.T) {
	c, peer := tcpPair(t)
	body, first := newH2Body(c)
	if _, err := peer.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := io.ReadFull(first, buf[:len("before")]); err != nil || string(buf[:n]) != "before" {
		t.Fatalf("first reader: %q, %v", buf[:n], err)
	}
	again, err := body.again()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		b, err := io.ReadAll(again)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(b)
	}()
	// The new reader has returned what was kept and reads c itself.
	for reading := false; !reading; {
		body.mu.Lock()
		reading = again.(*h2BodyReader).reading
		body.mu.Unlock()
		runtime.Gosched()
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close of the replaced reader: %v", err)
	}
	if _, err := peer.Write([]byte(" and after")); err != nil {
		t.Fatal(err)
	}
	peer.CloseWrite()
	select {
	case s := <-got:
		if s != "before and after" {
			t.Fatalf("the new reader read %q, want %q", s, "before and after")
		}
	case <-time.After(failAfter):
		t.Fatal("the new reader did not end at the local client's FIN")
	}
}
