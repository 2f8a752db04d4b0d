package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/portforwardd/portforwardd/nsenter"
)

// portDialer dials a host listener standing in for every pod, and says
// which pod port each dial asked for.
type portDialer struct {
	addr  string
	ports chan uint16
}

func (d portDialer) Dial(ctx context.Context, _ nsenter.Target, port uint16) (*net.TCPConn, error) {
	d.ports <- port
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp4", d.addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// echoPods is a host listener that echoes each of its connections until
// the client's FIN.
func echoPods(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln
}

// serveWith serves s on a loopback listener through s.Listener and
// returns its address.
func serveWith(t *testing.T, s *Server) string {
	t.Helper()
	hs := s.NewHTTPServer()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(s.Listener(ln))
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

// TestTokenWebSocketPorts: a v4 WebSocket on a CRI token's URL forwards
// the ports of its query when it names any, as the kubelet's streaming
// server does, and the ports of the CRI request only when it names none.
func TestTokenWebSocketPorts(t *testing.T) {
	d := portDialer{addr: echoPods(t).Addr().String(), ports: make(chan uint16, 4)}
	s := New(Config{Resolver: fuzzResolver{}, Dialer: d, Tokens: fuzzTokens{}}) // grants Ports: 8080
	addr := serveWith(t, s)
	for _, tc := range []struct {
		query string
		want  uint16
	}{
		{"", 8080},
		{"?port=9090", 9090},
	} {
		t.Run("query "+tc.query, func(t *testing.T) {
			ws, resp, err := (&websocket.Dialer{Subprotocols: []string{ProtocolV4Binary}, HandshakeTimeout: 30 * time.Second}).
				Dial("ws://"+addr+"/portforward/AbCd_-12"+tc.query, nil)
			if err != nil {
				t.Fatalf("v4 WebSocket upgrade: %v (%v)", err, resp)
			}
			defer ws.Close()
			select {
			case got := <-d.ports:
				if got != tc.want {
					t.Errorf("dialed the pod's port %d, want %d", got, tc.want)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the pod was not dialed")
			}
		})
	}
}

// sessionsEnded reads portforwardd_sessions_total{protocol, result}.
func sessionsEnded(t *testing.T, s *Server, protocol, result string) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.m.sessionsTotal.WithLabelValues(protocol, result).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestSessionResultSaysShutdown: portforwardd_sessions_total counts a
// session that ends while the server drains as result="shutdown", and one
// that ends before as "closed", so that a dashboard tells the sessions a
// rollout ended from those their clients did.
func TestSessionResultSaysShutdown(t *testing.T) {
	d := portDialer{addr: echoPods(t).Addr().String(), ports: make(chan uint16, 4)}
	s := New(Config{Resolver: fuzzResolver{}, Dialer: d})
	s.MarkServing()
	addr := serveWith(t, s)
	forward := func() net.Conn {
		c := sendRequest(t, addr, connectTCPRequest)
		rawEcho(t, c, "connect-tcp upgrade")
		return c
	}
	ended := func(result string, want float64) {
		t.Helper()
		waitFor(t, func() bool { return sessionsEnded(t, s, protocolRaw, result) == want }, func() string {
			return fmt.Sprintf("sessions_total{raw,%s} = %v, want %v", result, sessionsEnded(t, s, protocolRaw, result), want)
		})
	}

	forward().Close()
	ended("closed", 1)

	c := forward()
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		drained <- s.Drain(ctx)
	}()
	waitFor(t, func() bool { return !s.Ready() }, func() string { return "the drain did not begin" })
	c.Close()
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if got := sessionsEnded(t, s, protocolRaw, "shutdown"); got != 1 {
		t.Errorf("sessions_total{raw,shutdown} = %v after a session ended during the drain, want 1", got)
	}
	if got := sessionsEnded(t, s, protocolRaw, "closed"); got != 1 {
		t.Errorf("sessions_total{raw,closed} = %v, want the 1 that ended before the drain", got)
	}
}

// gatedResolver resolves every pod once the test opens its gate, and
// says when a resolve has begun.
type gatedResolver struct {
	started chan struct{}
	gate    chan struct{}
}

func (r gatedResolver) Resolve(context.Context, nsenter.Pod) (nsenter.Target, error) {
	r.started <- struct{}{}
	<-r.gate
	return nsenter.Target{Path: "/nonexistent/netns/pod"}, nil
}

// TestDrainEndsSPDYSessionSetUpDuringIt: a SPDY session whose request was
// being resolved when the drain began is drained as it starts: with no
// stream open it ends at once, and the drain with it, rather than
// keeping the drain until its deadline and being cut then.
func TestDrainEndsSPDYSessionSetUpDuringIt(t *testing.T) {
	res := gatedResolver{started: make(chan struct{}, 1), gate: make(chan struct{})}
	s := New(Config{Resolver: res, Dialer: refusingDialer{}})
	addr := serveWith(t, s)
	c := sendRequest(t, addr, "POST /portForward/default/web HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n")
	<-res.started
	drained := startDrain(t, s, 10*time.Second)
	close(res.gate)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade while the drain began: %v, %v", resp, err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v; want the idle session drained as it started", err)
	}
}

// TestTokenRefusalNamesTheSandbox: a forward on a CRI token's URL names
// its pod by the sandbox ID in its answers and log lines, as the kubelet's
// streaming library does: a pod dial that fails is a 502 saying which
// sandbox could not be reached.
func TestTokenRefusalNamesTheSandbox(t *testing.T) {
	s := New(Config{Resolver: fuzzResolver{}, Dialer: refusingDialer{}, Tokens: fuzzTokens{}})
	r := httptest.NewRequest(http.MethodGet, "/portforward/AbCd_-12?port=80", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", UpgradeConnectTCP)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	want := "error forwarding port 80 to pod 0123abcd, uid : connect: connection refused\n"
	if w.Code != http.StatusBadGateway || w.Body.String() != want {
		t.Errorf("%d %q, want 502 %q", w.Code, w.Body.String(), want)
	}
}

// TestRawForwardOutlivesTheAnswerDeadline: the 101 of a connect-tcp
// upgrade is written with a deadline (the read-header timeout); the
// forward then has none, and carries bytes both ways after it passed.
func TestRawForwardOutlivesTheAnswerDeadline(t *testing.T) {
	const timeout = 100 * time.Millisecond
	d := portDialer{addr: echoPods(t).Addr().String(), ports: make(chan uint16, 1)}
	s := New(Config{Resolver: fuzzResolver{}, Dialer: d, ReadHeaderTimeout: timeout})
	addr := serveWith(t, s)
	c := sendRequest(t, addr, connectTCPRequest)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("connect-tcp upgrade: %v, %v", resp, err)
	}
	upgraded := time.Now()
	for i := 0; time.Since(upgraded) < 5*timeout; i++ {
		msg := fmt.Sprintf("echo %d", i)
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatalf("write %v after the 101: %v", time.Since(upgraded), err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("%v after the 101: read %q, %v; want %q", time.Since(upgraded), got, err, msg)
		}
	}
}
