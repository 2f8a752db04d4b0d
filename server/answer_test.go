package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// counterValue reads one series of a counter vector.
func counterValue(t *testing.T, s *Server, protocol, result string) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.m.streamsTotal.WithLabelValues(protocol, result).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestRawClientGoneBeforeTheAnswerIsCounted: a connect-tcp client that
// resets its connection while the pod is dialed, so that the 101 cannot
// be written, had its pod connected to and closed with nothing counted;
// it is a forward the client reset, as one reset during the dial is.
func TestRawClientGoneBeforeTheAnswerIsCounted(t *testing.T) {
	accepted := make(chan net.Conn, 1)
	dialer := newGatedDialer(echoPod(t, func(c net.Conn) { accepted <- c }))
	s, _, ln := serveGated(t, dialer, nil)

	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /portForward/default/web?port=80 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n")
	<-dialer.started
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // a reset, delivered before the dial goes on
	close(dialer.gate)

	select {
	case pc := <-accepted:
		defer pc.Close()
		pc.SetReadDeadline(time.Now().Add(30 * time.Second))
		if n, err := pc.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Fatalf("the pod read %d bytes, %v; want its connection closed", n, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the pod was not dialed")
	}
	waitFor(t, func() bool { return counterValue(t, s, protocolRaw, "reset") == 1 }, func() string {
		return fmt.Sprintf("streams_total{raw,reset} = %v, want 1; ok %v, aborted %v", counterValue(t, s, protocolRaw, "reset"),
			counterValue(t, s, protocolRaw, "ok"), counterValue(t, s, protocolRaw, "aborted"))
	})
}

// waitFor polls cond, which the server's own goroutines make true in
// their time, until it holds; after 30 s it fails with why().
func waitFor(t *testing.T, cond func() bool, why func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(why())
		}
		<-tick.C
	}
}

// TestUpgradeAnswerToAClientThatDoesNotReadIsBounded: a client whose
// connection the daemon cannot write to (it left earlier answers unread,
// and the socket buffers are full) and that then asks for an upgrade held
// the handler in the write of its 101 for good, before any session the
// drain could end: the drain, cut short, then waited forever. The 101 is
// written with a deadline (the read-header timeout), and the drain ends.
func TestUpgradeAnswerToAClientThatDoesNotReadIsBounded(t *testing.T) {
	for _, tc := range []struct{ name, request string }{
		{"connect-tcp", "GET /portForward/default/web?port=80 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n"},
		{"SPDY", "GET /portForward/default/web HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"},
		{"WebSocket", "GET /portForward/default/web?port=80 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dialer := newGatedDialer(echoPod(t, nil))
			close(dialer.gate)
			conns := make(chan *net.TCPConn, 1)
			s := New(Config{Resolver: fuzzResolver{}, Dialer: dialer, ReadHeaderTimeout: 500 * time.Millisecond})
			hs := s.NewHTTPServer()
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go hs.Serve(s.Listener(connSignal{Listener: ln, conns: conns}))
			t.Cleanup(func() { hs.Close() })

			d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
				return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
			}}
			c, err := d.Dial("tcp4", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sc := <-conns
			// The client reads nothing: what the daemon's end writes
			// fills both buffers.
			sc.SetWriteBuffer(4096)
			// Until not one more byte goes in.
			for _, size := range []int{64 << 10, 1} {
				junk := make([]byte, size)
				for {
					sc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
					if _, err := sc.Write(junk); err != nil {
						break
					}
				}
			}
			sc.SetWriteDeadline(time.Time{})
			if _, err := io.WriteString(c, tc.request); err != nil {
				t.Fatal(err)
			}
			// The request is in: it is being served, or has been.
			waitFor(t, func() bool { return counterValue(t, s, protocolRaw, "reset") > 0 || s.inflightCount() > 0 },
				func() string { return "the request never reached the handler" })
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			drained := make(chan error, 1)
			go func() { drained <- s.Drain(ctx) }()
			select {
			case <-drained:
			case <-time.After(10 * time.Second):
				t.Fatal("the drain still waits, 10 s on, for a 101 its client does not read")
			}
		})
	}
}

// connSignal is a listener that hands the test each connection it accepts.
type connSignal struct {
	net.Listener
	conns chan *net.TCPConn
}

func (l connSignal) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.conns <- c.(*net.TCPConn)
	}
	return c, err
}

// inflightCount is the number of requests and sessions Drain would wait for.
func (s *Server) inflightCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight.n
}
