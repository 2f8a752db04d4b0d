package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/portforwardd/portforwardd/nsenter"
)

// gatedDialer dials addr (a listener on the host, standing in for the
// pod) once the test opens the gate, and says when a dial has begun.
type gatedDialer struct {
	addr    string
	started chan struct{}
	gate    chan struct{}
}

func (d gatedDialer) Dial(ctx context.Context, _ nsenter.Target, _ uint16) (*net.TCPConn, error) {
	d.started <- struct{}{}
	<-d.gate
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp4", d.addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// TestDrainWaitsForSessionsBeingSetUp: a connect-tcp request that is
// dialing its pod when Drain starts is a session Drain waits for, not one
// it misses: Drain returns only after that session has ended.
func TestDrainWaitsForSessionsBeingSetUp(t *testing.T) {
	pod, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	go func() {
		c, err := pod.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c) // echo until the client's FIN
	}()
	dialer := gatedDialer{addr: pod.Addr().String(), started: make(chan struct{}, 1), gate: make(chan struct{})}
	s := New(Config{Resolver: fuzzResolver{}, Dialer: dialer})
	hs := s.NewHTTPServer()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(s.Listener(ln))
	defer hs.Close()

	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET /portForward/default/web?port=80 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n")
	<-dialer.started
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		drained <- s.Drain(ctx)
	}()
	// The dial goes on once Drain has begun: otherwise the session may
	// end before Drain looks, and the case is not tested.
	for draining := false; !draining; {
		s.mu.Lock()
		draining = s.draining
		s.mu.Unlock()
		runtime.Gosched()
	}
	close(dialer.gate)

	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade while draining began: %v, %v", resp, err)
	}
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) while a session it had not seen was still running", err)
	default:
	}
	c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the client's FIN: %q, %v", rest, err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	// And once draining, a new request is refused before it is dialed.
	c2, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "GET /portForward/default/web?port=80 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("request after the drain: %v, %v; want 503", resp, err)
	}
	select {
	case <-dialer.started:
		t.Fatal("a request after the drain was dialed")
	default:
	}
}
