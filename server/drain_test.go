package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/portforwardd/portforwardd/nsenter"
	"golang.org/x/net/http2"
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

// echoPod is a host listener standing in for a pod that echoes its one
// connection until the client's FIN; handle, if not nil, takes the
// connection instead.
func echoPod(t *testing.T, handle func(net.Conn)) net.Listener {
	t.Helper()
	pod, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pod.Close() })
	go func() {
		c, err := pod.Accept()
		if err != nil {
			return
		}
		if handle != nil {
			handle(c)
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	return pod
}

// serveGated serves a Server whose dials of any pod go to pod once the
// gate opens, on a loopback listener wrapped by wrap (nil for none); it
// returns the server, its http.Server and its listener.
func serveGated(t *testing.T, dialer gatedDialer, wrap func(net.Listener) net.Listener) (*Server, *http.Server, net.Listener) {
	t.Helper()
	s := New(Config{Resolver: fuzzResolver{}, Dialer: dialer})
	hs := s.NewHTTPServer()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := ln
	if wrap != nil {
		served = wrap(ln)
	}
	go hs.Serve(s.Listener(served))
	t.Cleanup(func() { hs.Close() })
	return s, hs, ln
}

func newGatedDialer(pod net.Listener) gatedDialer {
	return gatedDialer{addr: pod.Addr().String(), started: make(chan struct{}, 1), gate: make(chan struct{})}
}

// TestDrainWaitsForSessionsBeingSetUp: a connect-tcp request that is
// dialing its pod when Drain starts is a session Drain waits for, not one
// it misses: Drain returns only after that session has ended.
func TestDrainWaitsForSessionsBeingSetUp(t *testing.T) {
	dialer := newGatedDialer(echoPod(t, nil))
	s, _, ln := serveGated(t, dialer, nil)

	c := sendRequest(t, ln.Addr().String(), connectTCPRequest)
	<-dialer.started
	// The dial goes on once Drain has begun: otherwise the session may
	// end before Drain looks, and the case is not tested.
	drained := startDrain(t, s, 30*time.Second)
	close(dialer.gate)

	br := rawEcho(t, c, "upgrade while draining began")
	drainWaitsFor(t, drained, c, br, "a session it had not seen")
	// And once draining, a new session is refused before it is dialed.
	c2 := sendRequest(t, ln.Addr().String(), "GET /portForward/default/web HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("request after the drain: %v, %v; want 503", resp, err)
	}
	select {
	case <-dialer.started:
		t.Fatal("a request after the drain was dialed")
	default:
	}
}

// acceptSignal is a listener that says when it has accepted a connection.
type acceptSignal struct {
	net.Listener
	accepted chan struct{}
}

func (l acceptSignal) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted <- struct{}{}
	}
	return c, err
}

// TestDrainServesConnectionsAcceptedBeforeIt: a client whose connection
// was accepted before the drain began, and whose request is read after
// (the drain came between its connect and its request, or during its TLS
// handshake), is answered, not dropped as http.Server's Shutdown drops
// it: served when the request brings its own forwarded connection
// (connect-tcp), and refused with a 503 when it is a SPDY session, which a
// drain would end before its first stream. The drain waits for the
// connect-tcp forward it took late when called again after Shutdown, as
// the daemon does.
func TestDrainServesConnectionsAcceptedBeforeIt(t *testing.T) {
	dialer := newGatedDialer(echoPod(t, nil))
	close(dialer.gate)
	accepted := make(chan struct{}, 2)
	s, hs, ln := serveGated(t, dialer, func(ln net.Listener) net.Listener { return acceptSignal{Listener: ln, accepted: accepted} })

	var conns [2]net.Conn
	var err error
	for i := range conns {
		if conns[i], err = net.Dial("tcp4", ln.Addr().String()); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
		conns[i].SetDeadline(time.Now().Add(30 * time.Second))
		<-accepted
	}
	// The daemon's sequence: stop listening, drain, and shut the
	// http.Server down once the connections accepted have been read.
	ln.Close()
	shutCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() {
		if err := s.AwaitAccepted(shutCtx); err != nil {
			shut <- err
			return
		}
		shut <- hs.Shutdown(shutCtx)
	}()
	if err := s.Drain(shutCtx); err != nil {
		t.Fatalf("Drain with nothing in flight: %v", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown began (%v) before the connections accepted had sent a request", err)
	default:
	}
	raw, spdy := conns[0], conns[1]
	io.WriteString(raw, connectTCPRequest)
	br := rawEcho(t, raw, "connect-tcp on a connection accepted before the drain")

	fmt.Fprintf(spdy, "GET /portForward/default/web HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(spdy), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("SPDY on a connection accepted before the drain: %v, %v; want 503", resp, err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	drained := make(chan error, 1)
	go func() { drained <- s.Drain(shutCtx) }()
	drainWaitsFor(t, drained, raw, br, "the forward it let in late")
}

// drainWaitsFor checks that the Drain answering on drained has not
// returned while the echo forward on c (read through br), which is what,
// runs, and returns nil once the client's FIN has ended it.
func drainWaitsFor(t *testing.T, drained <-chan error, c net.Conn, br io.Reader, what string) {
	t.Helper()
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) while %s was still running", err, what)
	default:
	}
	c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the client's FIN: %q, %v", rest, err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// TestServedWhileDraining: which requests a draining server still serves.
func TestServedWhileDraining(t *testing.T) {
	ws := func(protocols ...string) http.Header {
		h := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}
		for _, p := range protocols {
			h.Add("Sec-Websocket-Protocol", p)
		}
		return h
	}
	for _, tc := range []struct {
		name   string
		method string
		major  int
		header http.Header
		want   bool
	}{
		{"connect-tcp", http.MethodGet, 1, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"connect-tcp"}}, true},
		{"HTTP/2 stream", http.MethodPost, 2, http.Header{}, true},
		{"OPTIONS", http.MethodOptions, 1, http.Header{}, true},
		{"v4 WebSocket", http.MethodGet, 1, ws(ProtocolV4Binary), true},
		{"v4 base64 WebSocket", http.MethodGet, 1, ws(ProtocolV4Base64), true},
		{"WebSocket tunnel", http.MethodGet, 1, ws(ProtocolTunnel, ProtocolV4Binary), false},
		{"WebSocket with unknown protocols", http.MethodGet, 1, ws("chat"), false},
		{"SPDY", http.MethodGet, 1, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"SPDY/3.1"}}, false},
		{"plain GET", http.MethodGet, 1, http.Header{}, false},
	} {
		r := &http.Request{Method: tc.method, ProtoMajor: tc.major, Header: tc.header}
		if got := servedWhileDraining(r); got != tc.want {
			t.Errorf("%s: servedWhileDraining = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestAwaitAcceptedWaitsForHTTP2FirstStream: an HTTP/2 connection accepted
// before the drain counts as read once its first stream has come, not
// once its preface has: Shutdown's GOAWAY refuses every stream it has not
// read yet, and a client whose request body is a forwarded connection (the
// CLI's h2 transport) cannot retry it. AwaitAccepted waits for that first
// stream, which the draining server then serves.
func TestAwaitAcceptedWaitsForHTTP2FirstStream(t *testing.T) {
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
		io.Copy(c, c)
	}()
	dialer := gatedDialer{addr: pod.Addr().String(), started: make(chan struct{}, 1), gate: make(chan struct{})}
	close(dialer.gate)
	s := New(Config{Resolver: fuzzResolver{}, Dialer: dialer})
	hs := s.NewHTTPServer()
	defer hs.Close()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(s.Listener(ln)) }()

	cc := dialH2C(t, ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The PING's answer comes after the server has read the preface.
	if err := cc.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	ln.Close()
	if err := <-served; err == nil {
		t.Fatal("Serve returned nil after its listener closed")
	}
	// Serve has left its Accept: the only connection left to wait for is
	// the client's, which has sent its preface and no stream yet.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if err := s.AwaitAccepted(short); err == nil {
		t.Fatal("AwaitAccepted returned before the HTTP/2 connection's first stream: the shutdown's GOAWAY would refuse it")
	}

	// The daemon's sequence, and the stream it must answer.
	if err := s.Drain(ctx); err != nil {
		t.Fatalf("Drain with nothing in flight: %v", err)
	}
	shut := make(chan error, 1)
	go func() {
		if err := s.AwaitAccepted(ctx); err != nil {
			shut <- err
			return
		}
		shut <- hs.Shutdown(ctx)
	}()
	body, bodyW := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://x/portForward/default/web?port=80", body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatalf("the connection's first stream, sent as the drain began: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the connection's first stream: %s, want 200", resp.Status)
	}
	io.WriteString(bodyW, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	bodyW.Close()
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Fatalf("after the client's end of stream: %q, %v", rest, err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := s.Drain(ctx); err != nil {
		t.Fatalf("the second Drain: %v", err)
	}
}

// connectTCPRequest is a connect-tcp upgrade to port 80 of default/web.
const connectTCPRequest = "GET /portForward/default/web?port=80 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n"

// sendRequest connects to addr and sends req, with 30 s for the whole
// exchange; the connection closes with the test.
func sendRequest(t *testing.T, addr, req string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, req)
	return c
}

// startDrain starts s's Drain, with timeout, and returns once it has
// begun (the server is draining); Drain's error comes on the channel.
func startDrain(t *testing.T, s *Server, timeout time.Duration) <-chan error {
	t.Helper()
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		drained <- s.Drain(ctx)
	}()
	for draining := false; !draining; {
		s.mu.Lock()
		draining = s.draining
		s.mu.Unlock()
		runtime.Gosched()
	}
	return drained
}

// rawEcho reads the 101 of a connect-tcp upgrade sent on c (what names
// the exchange for a failure), then echoes "ping" through the forward to
// an echoing pod; it returns c's reader.
func rawEcho(t *testing.T, c net.Conn, what string) *bufio.Reader {
	t.Helper()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("%s: %v, %v; want 101", what, resp, err)
	}
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("%s: echo %q, %v", what, buf, err)
	}
	return br
}

// TestDrainCutShortResetsH2Streams: a Drain whose context ends with an
// HTTP/2 stream still forwarding resets the stream and returns, by
// itself: the http.Server's connections stay open (its Shutdown may not
// have given up yet), so the stream must end with the server's sessions,
// not with its connection.
func TestDrainCutShortResetsH2Streams(t *testing.T) {
	dialer := newGatedDialer(echoPod(t, nil))
	close(dialer.gate)
	s, _, ln := serveGated(t, dialer, nil)
	cc := dialH2C(t, ln.Addr().String())
	body, bodyW := io.Pipe()
	defer bodyW.Close()
	req, err := http.NewRequest(http.MethodPost, "http://x/portForward/default/web?port=80", body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %s, want 200", resp.Status)
	}
	go io.WriteString(bodyW, "hi")
	got := make([]byte, 2)
	if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != "hi" {
		t.Fatalf("echo: %q, %v", got, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- s.Drain(ctx) }()
	select {
	case err := <-drained:
		var cut *DrainCutShortError
		if !errors.As(err, &cut) || cut.Sessions != 1 || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Drain: %v; want it cut short with 1 session open", err)
		}
		if n := s.Sessions(); n != 0 {
			t.Errorf("Drain cut short returned with %d sessions left; want it to wait for the ones it closed", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return within 10 s of its deadline with an HTTP/2 stream open")
	}
	if rest, err := io.ReadAll(resp.Body); err == nil {
		t.Errorf("the stream the drain cut ended cleanly (%q); want it reset", rest)
	}
}

// dialH2C opens an h2c connection (prior knowledge) to addr, closed when
// the test ends, with a 30 s deadline on its socket.
func dialH2C(t *testing.T, addr string) *http2.ClientConn {
	t.Helper()
	conn, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
