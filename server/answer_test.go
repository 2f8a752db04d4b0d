package server

import (
	"fmt"
	"net"
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
	deadline := time.Now().Add(30 * time.Second)
	for counterValue(t, s, protocolRaw, "reset") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("streams_total{raw,reset} = %v, want 1; ok %v, aborted %v", counterValue(t, s, protocolRaw, "reset"),
				counterValue(t, s, protocolRaw, "ok"), counterValue(t, s, protocolRaw, "aborted"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
