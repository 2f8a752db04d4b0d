package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"

	"encoding/json"
	"github.com/portforwardd/portforwardd/nsenter/nsentertest"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// eventsRuntime is a CRI runtime whose GetContainerEvents stays open until
// the client leaves, as the kubelet's does with EventedPLEG.
type eventsRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	started chan struct{}
}

func (r *eventsRuntime) GetContainerEvents(_ *runtimeapi.GetEventsRequest, s grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	r.started <- struct{}{}
	<-s.Context().Done()
	return s.Context().Err()
}

// logSink reads serve's JSON log: ready yields the metrics address once
// the CRI proxy is serving too; drainTimeout is what the shutdown line
// says.
type logSink struct {
	mu           sync.Mutex
	metricsAddr  string
	listen       string
	drainTimeout any
	secondSignal bool // the second signal's line was logged
	ready        chan string
	cut          chan struct{} // a value once the drain was cut short, if not nil
}

func (l *logSink) Write(p []byte) (int, error) {
	var rec struct {
		Msg          string `json:"msg"`
		Addr         string `json:"addr"`
		DrainTimeout any    `json:"drain_timeout"`
	}
	if json.Unmarshal(p, &rec) == nil {
		l.mu.Lock()
		switch rec.Msg {
		case "serving metrics":
			l.metricsAddr = rec.Addr
		case "serving port-forward":
			l.listen = rec.Addr
		case "serving CRI proxy":
			l.ready <- l.metricsAddr
		case "shutting down":
			l.drainTimeout = rec.DrainTimeout
		case "drain cut short; remaining sessions were closed":
			if l.cut != nil {
				l.cut <- struct{}{}
			}
		case "second signal: closing every session now":
			l.secondSignal = true
		}
		l.mu.Unlock()
	}
	return len(p), nil
}

// listenAddr is the forwarding listener's address, once it serves.
func (l *logSink) listenAddr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.listen
}

// TestSIGTERMDrainsWhileACRICallIsOpen: a CRI call through the proxy that
// does not end (a kubelet's GetContainerEvents, a long PullImage) does not
// hold back the drain of the forwarding server: on SIGTERM it stops taking
// sessions at once, and forwarded connections get --drain-timeout to
// finish rather than what is left of it once the proxy has stopped.
func TestSIGTERMDrainsWhileACRICallIsOpen(t *testing.T) {
	d := startCRIDaemon(t, t.TempDir())
	sink, sigc, served, metricsAddr := d.sink, d.sigc, d.served, d.metricsAddr
	_, cancel := d.openEvents(t)

	sigc <- syscall.SIGTERM
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for status := ""; status != "503 Service Unavailable"; <-tick.C {
		if time.Now().After(deadline) {
			t.Errorf("/readyz still %s 10s after SIGTERM (drain timeout 1m): the drain waits for the CRI call", status)
			break
		}
		resp, err := client.Get("http://" + metricsAddr + "/readyz")
		if err != nil {
			t.Fatalf("GET /readyz: %v", err)
		}
		resp.Body.Close()
		status = resp.Status
	}

	cancel() // the CRI call ends; the proxy would cut it criStopGrace after the drain
	waitServed(t, served, "serve did not return after the CRI call ended")
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.drainTimeout != "1m0s" { // a duration in nanoseconds reads as 6e+10
		t.Errorf("the shutdown line's drain_timeout is %v, want \"1m0s\"", sink.drainTimeout)
	}
}

func (r *eventsRuntime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "events-runtime"}, nil
}

// TestCRIProxyServesThroughTheDrain: while the forwarding server drains
// on SIGTERM, the kubelet's CRI calls still reach the runtime through the
// proxy; once the drain is over, calls still in flight (a GetContainerEvents
// never ends) get criStopGrace and are then cut. The proxy stopped taking
// calls at SIGTERM and waited for those in flight up to --drain-timeout:
// a kubelet with EventedPLEG, or a PullImage under way, lost its runtime
// for the whole drain of every restart.
func TestCRIProxyServesThroughTheDrain(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root for a network namespace")
	}
	ns, podPort := startEchoPod(t)
	d := startCRIDaemon(t, "/run/netns")
	sigc, served, metricsAddr := d.sigc, d.served, d.metricsAddr
	listenAddr := d.sink.listenAddr()

	// A raw forward, open through the drain.
	fc := openRawForward(t, listenAddr, ns, podPort)
	events, _ := d.openEvents(t)

	sigc <- syscall.SIGTERM
	waitStatus(t, metricsAddr, "/readyz", "503 Service Unavailable")
	// Draining: a new connection to the CRI socket, and a call on it.
	during, err := grpc.NewClient("unix://"+d.criSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer during.Close()
	vctx, vcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer vcancel()
	if v, err := runtimeapi.NewRuntimeServiceClient(during).Version(vctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(false)); err != nil || v.RuntimeName != "events-runtime" {
		t.Errorf("Version through the proxy while the server drains: %v, %v; want the runtime's answer", v, err)
	}

	// The forward ends, and with it the drain; the open GetContainerEvents
	// does not keep the daemon.
	fc.Close()
	start := time.Now()
	waitServed(t, served, "serve did not return 30 s after the drain was over (drain timeout 1m): it waits for the CRI call in flight")
	if took := time.Since(start); took > criStopGrace+5*time.Second {
		t.Errorf("serve returned %v after the drain was over, want about criStopGrace (%v)", took, criStopGrace)
	}
	if _, err := events.Recv(); err == nil {
		t.Error("GetContainerEvents still open after the daemon stopped")
	}
}

// waitServed waits 30 s for serve to return nil; stuck says what it
// means if it does not.
func waitServed(t *testing.T, served <-chan error, stuck string) {
	t.Helper()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal(stuck)
	}
}

// waitStatus polls path on addr until it answers status, for 10 s.
func waitStatus(t *testing.T, addr, path, status string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for got := ""; got != status; <-tick.C {
		if time.Now().After(deadline) {
			t.Fatalf("%s still %s after 10 s, want %s", path, got, status)
		}
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		got = resp.Status
	}
}

// criDaemon is serve run with a CRI proxy in front of an eventsRuntime,
// and a drain timeout of 1m.
type criDaemon struct {
	rt          *eventsRuntime
	criSock     string
	sink        *logSink
	sigc        chan os.Signal
	served      chan error
	metricsAddr string
}

// startCRIDaemon starts serve with --netns-dir netnsDir and flags (which
// may override the drain timeout) and waits until its CRI proxy serves.
func startCRIDaemon(t *testing.T, netnsDir string, flags ...string) *criDaemon {
	t.Helper()
	return startCRIDaemonWith(t, netnsDir, nil, flags...)
}

// startCRIDaemonWith is startCRIDaemon with the sockets act passes as
// fd://NAME.
func startCRIDaemonWith(t *testing.T, netnsDir string, act *activation, flags ...string) *criDaemon {
	t.Helper()
	dir := t.TempDir()
	d := &criDaemon{
		rt:      &eventsRuntime{started: make(chan struct{}, 1)},
		criSock: filepath.Join(dir, "cri.sock"),
		sink:    &logSink{ready: make(chan string, 1)},
		sigc:    make(chan os.Signal, 2),
		served:  make(chan error, 1),
	}
	upstream := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(upstream, d.rt)
	uln, err := net.Listen("unix", filepath.Join(dir, "runtime.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go upstream.Serve(uln)
	t.Cleanup(upstream.Stop)

	o, err := parseFlags(append([]string{"--listen=127.0.0.1:0", "--metrics-listen=127.0.0.1:0", "--netns-dir=" + netnsDir,
		"--cri-listen=unix://" + d.criSock, "--cri-upstream=unix://" + filepath.Join(dir, "runtime.sock"),
		"--drain-timeout=1m"}, flags...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o.activation = act
	go func() { d.served <- serve(o, slog.New(slog.NewJSONHandler(d.sink, nil)), d.sigc) }()
	select {
	case d.metricsAddr = <-d.sink.ready:
	case err := <-d.served:
		t.Fatalf("serve ended during start-up: %v", err)
	}
	return d
}

// openEvents opens a GetContainerEvents through the proxy, as a kubelet
// with EventedPLEG does, and waits until it reaches the runtime; cancel
// ends it.
func (d *criDaemon) openEvents(t *testing.T) (events grpc.ServerStreamingClient[runtimeapi.ContainerEventResponse], cancel func()) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+d.criSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	events, err = runtimeapi.NewRuntimeServiceClient(conn).GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	<-d.rt.started // the call is in flight through the proxy
	return events, cancel
}

// startEchoPod makes a network namespace pod NS/pod under /run/netns with
// an echo server on 127.0.0.1, and returns NS and the server's port.
func startEchoPod(t *testing.T) (ns string, port int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root for a network namespace")
	}
	ns = fmt.Sprintf("pfdtest-%d", os.Getpid())
	netnsName := ns + "_pod"
	for _, args := range [][]string{{"netns", "add", netnsName}, {"-n", netnsName, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", netnsName).Run() })
	pln, err := nsentertest.Listen(filepath.Join("/run/netns", netnsName), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pln.Close() })
	go func() {
		for {
			c, err := pln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ns, pln.Addr().(*net.TCPAddr).Port
}

// openRawForward opens a connect-tcp forward to port of pod NS/pod through
// the forwarding listener at addr; it stays open until closed.
func openRawForward(t *testing.T, addr, ns string, port int) net.Conn {
	t.Helper()
	fc, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fc.Close() })
	fmt.Fprintf(fc, "GET /portForward/%s/pod?port=%d HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n", ns, port)
	resp, err := http.ReadResponse(bufio.NewReader(fc), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("connect-tcp: %v, %v", resp, err)
	}
	return fc
}

// TestSecondSignalAfterACutDrainStopsTheCRIProxyAtOnce: a second signal
// stops what is left at once, also once the drain was cut by its
// deadline, while the CRI proxy gives its calls in flight criStopGrace:
// the second signal was only listened for until the drain's deadline, so
// after a cut drain it went unread and the daemon took the whole grace.
func TestSecondSignalAfterACutDrainStopsTheCRIProxyAtOnce(t *testing.T) {
	ns, podPort := startEchoPod(t)
	d := startCRIDaemon(t, "/run/netns", "--drain-timeout=100ms")
	d.sink.mu.Lock()
	d.sink.cut = make(chan struct{}, 1)
	d.sink.mu.Unlock()
	openRawForward(t, d.sink.listenAddr(), ns, podPort) // open past the drain's deadline
	d.openEvents(t)                                     // open past criStopGrace

	d.sigc <- syscall.SIGTERM
	select {
	case <-d.sink.cut:
	case err := <-d.served:
		t.Fatalf("serve returned before the drain was cut: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the drain (timeout 100ms) was not cut within 30 s")
	}
	d.sigc <- syscall.SIGTERM
	start := time.Now()
	waitServed(t, d.served, "serve did not return 30 s after the second signal")
	if took := time.Since(start); took >= criStopGrace/2 {
		t.Errorf("serve returned %v after the second signal, want at once (criStopGrace is %v)", took, criStopGrace)
	}
	d.sink.mu.Lock()
	defer d.sink.mu.Unlock()
	if !d.sink.secondSignal {
		t.Error("the second signal was not logged: serve did not read it")
	}
}

// TestSecondSignalCutsTheDrainAtOnce: a second signal during the drain
// closes the sessions still open at once, rather than leaving them their
// --drain-timeout: an operator's second Ctrl-C (or the service manager's
// second SIGTERM) stops the daemon now. Found by mutation testing: the
// second signal no longer ending the drain's context survived every test,
// which sent it only once the drain had been cut by its own deadline.
func TestSecondSignalCutsTheDrainAtOnce(t *testing.T) {
	ns, podPort := startEchoPod(t)
	d := startCRIDaemon(t, "/run/netns") // --drain-timeout=1m
	d.sink.mu.Lock()
	d.sink.cut = make(chan struct{}, 1)
	d.sink.mu.Unlock()
	openRawForward(t, d.sink.listenAddr(), ns, podPort) // stays open through the drain

	d.sigc <- syscall.SIGTERM
	// The first signal has been read and the drain begun.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for ; ; <-tick.C {
		d.sink.mu.Lock()
		began := d.sink.drainTimeout != nil
		d.sink.mu.Unlock()
		if began {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no \"shutting down\" line 10 s after SIGTERM")
		}
	}
	d.sigc <- syscall.SIGINT
	select {
	case <-d.sink.cut:
	case err := <-d.served:
		t.Fatalf("serve returned without cutting the drain, a session still open: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the drain (timeout 1m) was not cut within 10 s of the second signal")
	}
	waitServed(t, d.served, "serve did not return 30 s after the second signal")
}
