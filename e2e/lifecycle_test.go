package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestNoLeaksAfterThousandConnections forwards 1000 connections and checks
// that the daemon's open fds and goroutines return to where they were, both
// while the session stays open and after it ends.
func TestNoLeaksAfterThousandConnections(t *testing.T) {
	d := startDaemon(t)
	eachTransport(t, func(t *testing.T, tr transport) {
		p := newPod(t)
		ln := p.listen(t, "tcp4", "127.0.0.1:0")
		serveEcho(ln)
		fds0, gr0 := d.openFDs(t), d.metric(t, "go_goroutines")

		f := startForward(t, d, tr, p.route(), port(ln))
		if err := echoRandom(f.local, 1024); err != nil { // warm-up: the session exists
			t.Fatal(err)
		}
		settle := func(wantFDs int, wantGR float64) {
			t.Helper()
			eventually(t, 20*time.Second, func() (bool, string) {
				fds, gr := d.openFDs(t), d.metric(t, "go_goroutines")
				return fds <= wantFDs && gr <= wantGR, fmt.Sprintf("fds %d (want %d), goroutines %v (want %v)", fds, wantFDs, gr, wantGR)
			})
		}
		settle(fds0+2, gr0+100) // let the warm-up connection finish
		fds1, gr1 := d.openFDs(t), d.metric(t, "go_goroutines")

		const total, parallel = 1000, 20
		var wg sync.WaitGroup
		errc := make(chan error, total)
		sem := make(chan struct{}, parallel)
		for range total {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				errc <- echoRandom(f.local, 4096)
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := d.metric(t, fmt.Sprintf(`portforwardd_streams_total{protocol=%q,result="ok"}`, tr.protocol)); got != total+1 {
			t.Errorf("streams_total{result=ok}: got %v, want %d", got, total+1)
		}
		settle(fds1, gr1) // session still open: per-connection state is gone
		f.close()
		if err := f.wait(t); err != nil {
			t.Fatalf("ForwardPorts: %v", err)
		}
		settle(fds0, gr0) // session closed: back to the daemon's idle state
	})
}

// TestMetricsAndHealth checks the metrics a forward produces and the
// health endpoints.
func TestMetricsAndHealth(t *testing.T) {
	d := startDaemon(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + d.metricsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", path, resp.Status)
		}
	}
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	f := startForward(t, d, transports[0], p.route(), port(ln))
	if err := echoRandom(f.local, 12345); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		got := d.metric(t, `portforwardd_streams_total{protocol="spdy",result="ok"}`)
		return got == 1, fmt.Sprintf("streams_total{result=ok} = %v", got)
	})
	want := map[string]float64{
		`portforwardd_sessions_active{protocol="spdy"}`:                       1,
		`portforwardd_streams_active{protocol="spdy"}`:                        0,
		`portforwardd_bytes_total{direction="client_to_pod",protocol="spdy"}`: 12345,
		`portforwardd_bytes_total{direction="pod_to_client",protocol="spdy"}`: 12345,
		`portforwardd_dial_duration_seconds_count`:                            1,
	}
	for series, v := range want {
		if got := d.metric(t, series); got != v {
			t.Errorf("%s: got %v, want %v", series, got, v)
		}
	}
	for _, series := range []string{"go_goroutines", "process_open_fds"} {
		if d.metric(t, series) <= 0 {
			t.Errorf("%s missing", series)
		}
	}
	f.close()
	f.wait(t)
	eventually(t, 10*time.Second, func() (bool, string) {
		got := d.metric(t, `portforwardd_sessions_total{protocol="spdy",result="closed"}`)
		return got == 1, fmt.Sprintf("sessions_total{result=closed} = %v", got)
	})
}

// TestSIGTERMDrainsActiveTransfers: on SIGTERM the daemon stops taking
// sessions and streams, lets the transfer in flight finish, and exits 0.
func TestSIGTERMDrainsActiveTransfers(t *testing.T) {
	d := startDaemon(t, "--drain-timeout", "30s")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	release := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("first half,"))
		<-release
		c.Write([]byte("second half"))
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
	}()
	f := startForward(t, d, transports[0], p.route(), port(ln))
	c := f.dial(t)
	buf := make([]byte, len("first half,"))
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}

	exit := d.signal(t, syscall.SIGTERM)
	eventually(t, 10*time.Second, func() (bool, string) {
		resp, err := http.Get("http://" + d.metricsAddr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable, "readyz " + resp.Status
	})
	// No new sessions: the listener is closed.
	if c, err := net.DialTimeout("tcp4", d.addr, time.Second); err == nil {
		c.Close()
		t.Error("the forwarding listener still accepts connections while draining")
	}
	// No new streams on the open session.
	c2 := f.dial(t)
	c2.SetReadDeadline(time.Now().Add(30 * time.Second))
	if b, _ := io.ReadAll(c2); len(b) != 0 {
		t.Errorf("a new connection while draining got %q", b)
	}
	select {
	case code := <-exit:
		t.Fatalf("daemon exited (%d) with a transfer in flight", code)
	default:
	}
	close(release)
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "second half" {
		t.Fatalf("in-flight transfer after SIGTERM: %q, %v", rest, err)
	}
	c.Close()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit code %d, want 0", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not exit after its last transfer finished")
	}
	logs := strings.Join(d.logLines(), "\n")
	if !strings.Contains(logs, `"msg":"stopped"`) {
		t.Errorf("no 'stopped' log line:\n%s", logs)
	}
}

// TestDrainTimeoutClosesStuckTransfers: a transfer that does not finish
// within --drain-timeout is closed and the daemon still exits 0.
func TestDrainTimeoutClosesStuckTransfers(t *testing.T) {
	d := startDaemon(t, "--drain-timeout", "300ms")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	f := startForward(t, d, transports[0], p.route(), port(ln))
	c := f.dial(t)
	echoOnce(t, c, "open")
	d.stop(t, 30*time.Second, "after its drain timeout")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("stuck connection after drain timeout: %v, want it closed", err)
	}
}

// TestConnectionBreakAbortsForwards: when the client's connection breaks
// (no close, no reset of the streams) while forwards run, each of them
// ends as aborted, every time, whatever the pump was doing: the
// connection ended, no stream was reset (PROTOCOL.md, "Connection
// lifetime"). The pod sends all the while, so the daemon is as likely to
// learn of the break by a failed write as by the session ending.
func TestConnectionBreakAbortsForwards(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEach(ln, func(c *net.TCPConn) {
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	const rounds = 10
	for _, tr := range []struct{ name, protocol string }{
		{"spdy", "spdy"}, {"tunnel", "spdy_websocket"}, {"v4", "websocket_v4"}, {"v4-base64", "websocket_v4_base64"},
	} {
		t.Run(tr.name, func(t *testing.T) {
			for range rounds {
				switch tr.name {
				case "spdy", "tunnel":
					s := dialRawSPDY(t, d, p.route(), tr.name)
					errID, dataID := s.id(), s.id()
					s.send(synStreamFrame(errID, 0, s.block(portHeaders("error", strconv.Itoa(port(ln)), "1"))))
					s.send(synStreamFrame(dataID, 0, s.block(portHeaders("data", strconv.Itoa(port(ln)), "1"))))
					s.expect("the pod's data", func(f spdyFrame) bool { return !f.control && f.stream == dataID })
					s.tcp.Close()
				default:
					var tcp net.Conn
					dialer := websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}, HandshakeTimeout: 10 * time.Second,
						NetDial: func(network, addr string) (net.Conn, error) {
							c, err := net.Dial(network, addr)
							tcp = c
							return c, err
						}}
					if tr.name == "v4-base64" {
						dialer.Subprotocols = []string{"v4.base64.channel.k8s.io"}
					}
					ws, _, err := dialer.Dial(fmt.Sprintf("ws://%s%s?port=%d", d.addr, p.route(), port(ln)), nil)
					if err != nil {
						t.Fatal(err)
					}
					c := &v4Client{t: t, ws: ws, base64: tr.name == "v4-base64"}
					c.expectPrefixes(port(ln))
					c.readData(0, 1)
					tcp.Close()
				}
			}
			eventually(t, 10*time.Second, func() (bool, string) {
				sessions := d.metric(t, fmt.Sprintf(`portforwardd_sessions_active{protocol=%q}`, tr.protocol))
				active := d.metric(t, fmt.Sprintf(`portforwardd_streams_active{protocol=%q}`, tr.protocol))
				aborted := d.metric(t, fmt.Sprintf(`portforwardd_streams_total{protocol=%q,result="aborted"}`, tr.protocol))
				reset := d.metric(t, fmt.Sprintf(`portforwardd_streams_total{protocol=%q,result="reset"}`, tr.protocol))
				return sessions == 0 && active == 0 && aborted+reset == rounds,
					fmt.Sprintf("sessions_active %v, streams_active %v, streams_total aborted %v, reset %v", sessions, active, aborted, reset)
			})
			if reset := d.metric(t, fmt.Sprintf(`portforwardd_streams_total{protocol=%q,result="reset"}`, tr.protocol)); reset != 0 {
				t.Errorf("%v of %d forwards cut by their connection's break counted as reset, want aborted", reset, rounds)
			}
		})
	}
}

// TestDrainTimeoutEndsRawDialInFlight: a connect-tcp upgrade whose dial
// into the pod hangs (its SYNs dropped) when the drain's deadline comes
// is given up then, as every forward is: the daemon exits within its
// drain timeout, not once --dial-timeout has run out. The raw dial is
// made apart from the request's context (the client's FIN may come with
// its request), and nothing else ended it.
func TestDrainTimeoutEndsRawDialInFlight(t *testing.T) {
	const drainTimeout, dialTimeout = time.Second, 2 * time.Minute
	d := startDaemon(t, "--drain-timeout", drainTimeout.String(), "--dial-timeout", dialTimeout.String())
	p := newPod(t)
	const hung = 9
	p.blackhole(t, hung)
	c, err := net.Dial("tcp4", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n", rawPath(p, hung))
	// The daemon's SYN to the pod is out (its socket is in the pod's
	// namespace, in SYN-SENT).
	eventually(t, 10*time.Second, func() (bool, string) {
		out, err := exec.Command("ss", "-N", p.netnsName, "-Htn", "state", "syn-sent").CombinedOutput()
		return err == nil && strings.Contains(string(out), ":"+strconv.Itoa(hung)), fmt.Sprintf("no dial in flight in the pod: %s %v", out, err)
	})
	start := time.Now()
	exit := d.signal(t, syscall.SIGTERM)
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit code %d after SIGTERM, want 0", code)
		}
		if took := time.Since(start); took > drainTimeout+10*time.Second {
			t.Fatalf("exit %v after SIGTERM, drain timeout %v", took, drainTimeout)
		}
	case <-time.After(drainTimeout + 10*time.Second):
		t.Fatalf("the daemon did not exit within %v of SIGTERM (drain timeout %v) with a raw dial in flight", drainTimeout+10*time.Second, drainTimeout)
	}
	// The client learns nothing was forwarded: a 503, or at least the
	// connection closed, never an answer that reads as a success.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.ReadAll(c)
	if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 503 ") {
		t.Errorf("the client whose dial the drain gave up got %q, want a 503 or nothing", got)
	}
}
