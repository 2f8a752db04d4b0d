package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

// forwardErrors records what client-go reports through
// utilruntime.HandleError, keyed by local port: the "An error occurred
// forwarding" messages are the error-stream texts kubectl prints.
var forwardErrors = &errorLog{byPort: map[int][]string{}, waiters: map[int]chan struct{}{}}

type errorLog struct {
	mu      sync.Mutex
	byPort  map[int][]string
	waiters map[int]chan struct{}
}

func installErrorCapture() {
	utilruntime.ErrorHandlers = append(utilruntime.ErrorHandlers, forwardErrors.handle)
}

func (l *errorLog) handle(_ context.Context, err error, msg string, kv ...any) {
	local := -1
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "localPort" {
			local, _ = strconv.Atoi(fmt.Sprint(kv[i+1]))
		}
	}
	text := msg
	if err != nil {
		text = msg + ": " + err.Error()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byPort[local] = append(l.byPort[local], text)
	if ch, ok := l.waiters[local]; ok {
		close(ch)
		delete(l.waiters, local)
	}
}

// wait returns the messages for a local port once there is one.
func (l *errorLog) wait(t *testing.T, local int) []string {
	t.Helper()
	l.mu.Lock()
	if msgs := l.byPort[local]; len(msgs) > 0 {
		l.mu.Unlock()
		return msgs
	}
	ch := make(chan struct{})
	l.waiters[local] = ch
	l.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("client-go reported no error for local port %d", local)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.byPort[local]...)
}

// forget drops what was recorded for a local port: a new forward listening
// on a port number an earlier one used must not inherit its errors.
func (l *errorLog) forget(local int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.byPort, local)
}

func (l *errorLog) get(local int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.byPort[local]...)
}

// forward is a running client-go port-forward, as `kubectl port-forward
// POD :REMOTE` sets it up, listening on 127.0.0.1.
type forward struct {
	pf    *portforward.PortForwarder
	local int
	stop  chan struct{}
	done  chan error
}

// transport is a way kubectl reaches the daemon.
type transport struct {
	name     string
	protocol string // the protocol label the daemon's metrics use for it
	dialer   func(t *testing.T, d *daemon, route string) streamhttp.Dialer
}

// transports are the dialers kubectl builds (k8s.io/kubectl
// pkg/cmd/portforward createDialer): plain SPDY (kubectl < 1.31 or
// KUBECTL_PORT_FORWARD_WEBSOCKETS=false), and the WebSocket tunnel with
// SPDY as the fallback (kubectl ≥ 1.31).
var transports = []transport{
	{"spdy", "spdy", spdyDialer},
	{"websocket", "spdy_websocket", tunnelDialer},
}

func spdyDialer(t *testing.T, d *daemon, route string) streamhttp.Dialer {
	return spdyDialerFor(t, &rest.Config{Host: "http://" + d.addr}, route)
}

func tunnelDialer(t *testing.T, d *daemon, route string) streamhttp.Dialer {
	t.Helper()
	cfg := &rest.Config{Host: "http://" + d.addr}
	return portforward.NewFallbackDialerForStreaming(tunnelDialerFor(t, cfg, route), spdyDialerFor(t, cfg, route), func(err error) bool {
		return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
	})
}

// spdyDialerFor is client-go's SPDY dialer for route on the server of cfg
// (its TLS settings and bearer token included), as kubectl builds it.
func spdyDialerFor(t *testing.T, cfg *rest.Config, route string) streamhttp.Dialer {
	t.Helper()
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, http.MethodPost, routeURL(t, cfg, route))
}

// tunnelDialerFor is client-go's SPDY-over-WebSocket dialer, without the
// SPDY fallback.
func tunnelDialerFor(t *testing.T, cfg *rest.Config, route string) streamhttp.Dialer {
	t.Helper()
	tunnel, err := portforward.NewSPDYOverWebsocketDialerForStreaming(routeURL(t, cfg, route), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tunnel
}

func routeURL(t *testing.T, cfg *rest.Config, route string) *url.URL {
	t.Helper()
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = route
	return u
}

// startForward starts client-go's tools/portforward with tr's dialer, as
// `kubectl port-forward POD :REMOTE` does, listening on 127.0.0.1.
func startForward(t *testing.T, d *daemon, tr transport, route string, remotePort int) *forward {
	t.Helper()
	f := startForwardWith(t, tr.dialer(t, d, route), remotePort)
	// The session must run over the transport under test, not a fallback.
	// (The daemon counts it just after the 101 goes out.)
	eventually(t, 10*time.Second, func() (bool, string) {
		got := d.metric(t, fmt.Sprintf(`portforwardd_sessions_active{protocol=%q}`, tr.protocol))
		return got >= 1, fmt.Sprintf("no %s session is active after the %s dialer connected", tr.protocol, tr.name)
	})
	return f
}

// startForwardWith starts client-go's tools/portforward with dialer,
// listening on 127.0.0.1, and waits until it is ready.
func startForwardWith(t *testing.T, dialer streamhttp.Dialer, remotePort int) *forward {
	t.Helper()
	f := &forward{stop: make(chan struct{}), done: make(chan error, 1)}
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", remotePort)}, f.stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f.pf = pf
	go func() { f.done <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-f.done:
		t.Fatalf("ForwardPorts: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("port-forward not ready")
	}
	ports, err := pf.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	f.local = int(ports[0].Local)
	forwardErrors.forget(f.local)
	t.Cleanup(f.close)
	return f
}

func (f *forward) close() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
}

// wait returns what ForwardPorts returned.
func (f *forward) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-f.done:
		f.done <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("ForwardPorts did not return")
		return nil
	}
}

func (f *forward) dial(t *testing.T) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(f.local))
	if err != nil {
		t.Fatalf("dial the forwarded port: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func (f *forward) errors() []string { return forwardErrors.get(f.local) }

func hasSubstring(msgs []string, sub string) bool {
	for _, m := range msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}

// eachCase runs body once per transport and pod bind mode.
func eachCase(t *testing.T, body func(t *testing.T, tr transport, bindAddr string)) {
	for _, tr := range transports {
		for _, bm := range bindModes {
			t.Run(tr.name+"/"+bm.name, func(t *testing.T) { body(t, tr, bm.addr) })
		}
	}
}

// eachTransport runs body once per transport.
func eachTransport(t *testing.T, body func(t *testing.T, tr transport)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { body(t, tr) })
	}
}
