package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/portforward"
)

// TestFault runs the fault suite against one daemon: pods that vanish or
// reset mid-transfer, a client killed mid-transfer, 10,000 streams over a
// minute, 1,000 concurrent sessions, then a leak check against the
// daemon's idle state and a SIGTERM with transfers in flight. Every
// transfer checks the sha256 of what arrived; after every case a fresh
// client-go session must work and the daemon must be back to what it held
// before the case.
func TestFault(t *testing.T) {
	start := time.Now()
	const drainTimeout = 20 * time.Second
	// --pprof: the leak check collects garbage before it reads the heap.
	d := startDaemon(t, "--drain-timeout", drainTimeout.String(), "--pprof")
	ep := newEchoPod(t)
	var res results
	t.Cleanup(func() {
		t.Logf("fault suite: %v\n%s", time.Since(start).Round(100*time.Millisecond),
			res.table("case", "outcome", "RSS peak", "leaks"))
	})

	// The daemon's idle state, after one session has come and gone.
	servesNextClient(t, d, ep)
	eventually(t, 30*time.Second, func() (bool, string) {
		s := d.metricSum(t, "portforwardd_sessions_active")
		return s == 0, fmt.Sprintf("sessions_active %v after the warm-up", s)
	})
	base := d.usage(t)
	d.collectGarbage(t)
	heap0 := d.metric(t, "go_memstats_heap_inuse_bytes")
	t.Logf("baseline: %v, heap %.1f MiB, RSS %d MiB", base, heap0/(1<<20), d.rssMiB(t))

	run := func(name string, body func(t *testing.T) string) {
		t.Run(name, func(t *testing.T) {
			before := d.usage(t)
			rss := d.sampleRSS()
			detail, leaks := "", "not reached"
			defer func() { res.add(name, outcome(t, detail), fmt.Sprintf("%d MiB", rss.peakMiB()), leaks) }()
			detail = body(t)
			servesNextClient(t, d, ep)
			after := d.settle(t, before, 30*time.Second)
			leaks = fmt.Sprintf("none: %d→%d fds, %v→%v goroutines, 0 sessions, 0 streams", before.fds, after.fds, before.goroutines, after.goroutines)
		})
	}

	run("netns deleted mid-transfer", func(t *testing.T) string {
		var out []string
		for _, tr := range transports {
			t.Run(tr.name, func(t *testing.T) {
				var a, b string
				t.Run("netns file deleted, pod alive", func(t *testing.T) { a = faultNetnsFileDeleted(t, d, tr) })
				t.Run("pod killed, netns deleted", func(t *testing.T) { b = faultPodKilled(t, d, tr) })
				out = append(out, tr.name+": "+a+"; "+b)
			})
		}
		return strings.Join(out, "; ") + `; then a new connection: client-go reports "network namespace is gone" and ends the session; a new session: 404`
	})
	run("pod resets mid-transfer", func(t *testing.T) string {
		var out []string
		for _, tr := range transports {
			t.Run(tr.name, func(t *testing.T) {
				var a, b string
				t.Run("pod to client", func(t *testing.T) { a = faultPodResetDownload(t, d, tr) })
				t.Run("client to pod", func(t *testing.T) { b = faultPodResetUpload(t, d, tr) })
				out = append(out, tr.name+": "+a+", "+b)
			})
		}
		return strings.Join(out, "; ") + "; nothing on the error stream, streams_total{reset} +1, the next connection of the session works"
	})
	run("client SIGKILLed mid-transfer", func(t *testing.T) string {
		var out []string
		for _, flag := range []string{"spdy", "websocket"} {
			t.Run(flag, func(t *testing.T) { out = append(out, "--transport "+flag+": "+faultClientKilled(t, d, flag)) })
		}
		return strings.Join(out, "; ")
	})
	run("10,000 streams over 60 s", func(t *testing.T) string {
		return faultManyStreams(t, d, ep)
	})
	run("1,000 concurrent sessions", func(t *testing.T) string {
		return faultManySessions(t, d, ep)
	})
	t.Run("after all of it", func(t *testing.T) {
		rss := d.rssMiB(t)
		heap, now := 0.0, usage{}
		defer func() {
			res.add("after all of it: back to the idle state", outcome(t, fmt.Sprintf("heap after a GC %.1f MiB (baseline %.1f MiB)", heap/(1<<20), heap0/(1<<20))),
				fmt.Sprintf("%d MiB now", rss), fmt.Sprintf("none: %d→%d fds, %v→%v goroutines", base.fds, now.fds, base.goroutines, now.goroutines))
		}()
		now = d.settle(t, base, 30*time.Second)
		// The Go runtime keeps freed pages for a while, so RSS says little
		// here; the heap after a collection says what is still referenced.
		// (Two: sync.Pool contents survive the first.)
		d.collectGarbage(t)
		d.collectGarbage(t)
		heap = d.metric(t, "go_memstats_heap_inuse_bytes")
		if heap > heap0+16<<20 {
			t.Errorf("heap in use after a GC: %.1f MiB, baseline %.1f MiB: something outlives its session", heap/(1<<20), heap0/(1<<20))
		}
	})
	t.Run("SIGTERM during transfers", func(t *testing.T) {
		rss := d.sampleRSS()
		detail := ""
		defer func() {
			res.add("SIGTERM during transfers", outcome(t, detail), fmt.Sprintf("%d MiB", rss.peakMiB()), "(daemon exited)")
		}()
		detail = faultSIGTERM(t, d, drainTimeout)
	})
}

// servePattern serves pattern(seed) on every connection of ln: size bytes,
// then FIN, then it reads until the client's FIN. With a gate, each
// connection pauses after pauseAt bytes until the gate is closed.
func servePattern(ln net.Listener, seed uint64, size, pauseAt int64, gate <-chan struct{}) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if gate != nil {
					if _, err := writePattern(c, seed, pauseAt); err != nil {
						return
					}
					<-gate
					src := pattern(seed)
					io.CopyN(io.Discard, src, pauseAt)
					if _, err := io.Copy(c, io.LimitReader(src, size-pauseAt)); err != nil {
						return
					}
				} else if _, err := writePattern(c, seed, size); err != nil {
					return
				}
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
			}()
		}
	}()
}

// expectNetnsGone opens a new connection through f to a pod whose netns is
// gone: client-go must report the kubelet's text and end the session, and
// a new session to the pod must be refused with 404.
func expectNetnsGone(t *testing.T, d *daemon, f *forward, p *pod, remote int) {
	t.Helper()
	old := len(f.errors())
	c := f.dial(t)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Fatalf("a new connection to the removed pod read %d bytes", len(b))
	}
	var msgs []string
	eventually(t, 30*time.Second, func() (bool, string) {
		msgs = f.errors()[old:]
		return hasSubstring(msgs, "network namespace is gone"), fmt.Sprintf("client-go errors %q", msgs)
	})
	want := fmt.Sprintf("error forwarding port %d to pod %s/%s, uid : ", remote, p.namespace, p.name)
	if !hasSubstring(msgs, want) {
		t.Fatalf("client-go errors %q; want the kubelet's text %q", msgs, want)
	}
	if err := f.wait(t); !errors.Is(err, portforward.ErrLostConnectionToPod) {
		t.Fatalf("ForwardPorts returned %v, want %v", err, portforward.ErrLostConnectionToPod)
	}
	resp, body := rawRequest(t, d.addr, "POST "+p.route()+" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"+
		"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n")
	if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(body, "pod does not exist") {
		t.Fatalf("new session to the removed pod: %d %q, want 404 pod does not exist", resp.StatusCode, body)
	}
}

// faultNetnsFileDeleted: `ip netns delete` while data moves, with the
// pod's server still running. The kernel keeps a namespace alive while
// sockets in it are open, so the transfer in flight completes intact; the
// namespace can no longer be entered, so the next connection fails.
func faultNetnsFileDeleted(t *testing.T, d *daemon, tr transport) string {
	const half = 16 << 20
	a, b := newPod(t), newPod(t)
	lnA, lnB := a.listen(t, "tcp4", "127.0.0.1:0"), b.listen(t, "tcp4", "127.0.0.1:0")
	gate := make(chan struct{})
	servePattern(lnA, 1, 2*half, half, gate)
	servePattern(lnB, 2, 2*half, half, gate)
	fA, fB := startForward(t, d, tr, a.route(), port(lnA)), startForward(t, d, tr, b.route(), port(lnB))
	cA, cB := fA.dial(t), fB.dial(t)
	cA.SetReadDeadline(time.Now().Add(60 * time.Second))
	cB.SetReadDeadline(time.Now().Add(60 * time.Second))
	gotB := make(chan received, 1)
	go func() { gotB <- receive(cB, 0, nil) }()
	gotA := receive(cA, half, func() {
		a.remove(t) // the first half is through, the second not sent yet
		close(gate)
	})
	rb := <-gotB
	if gotA.err != nil || gotA.n != 2*half || !gotA.isPrefixOf(1) {
		t.Fatalf("pod A (netns deleted mid-transfer): %d bytes, err %v, prefix of what was sent: %v; want all %d", gotA.n, gotA.err, gotA.isPrefixOf(1), 2*half)
	}
	if rb.err != nil || rb.n != 2*half || !rb.isPrefixOf(2) {
		t.Fatalf("pod B: %d bytes, err %v, sha256 ok %v; want all %d", rb.n, rb.err, rb.isPrefixOf(2), 2*half)
	}
	cA.CloseWrite()
	cB.CloseWrite()
	expectNetnsGone(t, d, fA, a, port(lnA))
	// B's session goes on.
	c := fB.dial(t)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	if r := receive(c, 0, nil); r.err != nil || r.n != 2*half || !r.isPrefixOf(2) {
		t.Fatalf("pod B after A's removal: %d bytes, err %v, sha256 ok %v", r.n, r.err, r.isPrefixOf(2))
	}
	return fmt.Sprintf("netns file deleted with the pod alive: its transfer completed intact (%d MiB), the other pod's too", 2*half>>20)
}

// faultPodKilled: the pod dies mid-transfer (its sockets close, with
// client data unread, as when its process is killed) and its netns file
// is deleted. The stream ends, what arrived is a prefix, another pod's
// transfer is untouched.
func faultPodKilled(t *testing.T, d *daemon, tr transport) string {
	const size = 32 << 20
	a, b := newPod(t), newPod(t)
	lnA, lnB := a.listen(t, "tcp4", "127.0.0.1:0"), b.listen(t, "tcp4", "127.0.0.1:0")
	podConn := make(chan net.Conn, 1)
	go func() {
		c, err := lnA.Accept()
		if err != nil {
			return
		}
		podConn <- c
		writePattern(c, 3, -1) // until the pod is killed
	}()
	servePattern(lnB, 4, size, 0, nil)
	fA, fB := startForward(t, d, tr, a.route(), port(lnA)), startForward(t, d, tr, b.route(), port(lnB))
	cA, cB := fA.dial(t), fB.dial(t)
	if _, err := cA.Write(make([]byte, 64<<10)); err != nil { // the pod never reads it
		t.Fatal(err)
	}
	cA.SetReadDeadline(time.Now().Add(60 * time.Second))
	cB.SetReadDeadline(time.Now().Add(60 * time.Second))
	gotB := make(chan received, 1)
	go func() { gotB <- receive(cB, 0, nil) }()
	gotA := receive(cA, 8<<20, func() {
		lnA.Close()
		(<-podConn).Close() // unread data: the kernel sends RST, as for a killed process
		a.remove(t)
	})
	if errors.Is(gotA.err, os.ErrDeadlineExceeded) {
		t.Fatalf("the stream of the killed pod did not end within 60 s (%d bytes arrived)", gotA.n)
	}
	if gotA.n < 8<<20 || !gotA.isPrefixOf(3) {
		t.Fatalf("killed pod: %d bytes arrived (err %v), prefix of what was sent: %v", gotA.n, gotA.err, gotA.isPrefixOf(3))
	}
	end := "EOF"
	if gotA.err != nil {
		end = gotA.err.Error()
	}
	if rb := <-gotB; rb.err != nil || rb.n != size || !rb.isPrefixOf(4) {
		t.Fatalf("the other pod's transfer: %d bytes, err %v, sha256 ok %v; want all %d", rb.n, rb.err, rb.isPrefixOf(4), size)
	}
	cB.CloseWrite()
	expectNetnsGone(t, d, fA, a, port(lnA))
	return fmt.Sprintf("pod killed and netns deleted: its stream ended (%s) after %.1f MiB, a prefix; the other pod's %d MiB intact", end, float64(gotA.n)/(1<<20), size>>20)
}

// faultPodResetDownload: the pod resets its socket (SO_LINGER 0) while it
// sends. The client's connection ends, what arrived is a prefix, nothing
// reaches the error stream, and the session serves the next connection.
func faultPodResetDownload(t *testing.T, d *daemon, tr transport) string {
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	gate := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go writePattern(c, 5, -1) // until the reset below fails it
		<-gate
		c.(*net.TCPConn).SetLinger(0)
		c.Close() // RST, dropping what is still in the socket's send queue
		serveEcho(ln)
	}()
	resets := fmt.Sprintf(`portforwardd_streams_total{protocol=%q,result="reset"}`, tr.protocol)
	resets0 := d.metric(t, resets)
	f := startForward(t, d, tr, p.route(), port(ln))
	old := len(f.errors())
	c := f.dial(t)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	got := receive(c, 4<<20, func() { close(gate) })
	if errors.Is(got.err, os.ErrDeadlineExceeded) {
		t.Fatalf("the stream did not end within 60 s after the pod's reset (%d bytes arrived)", got.n)
	}
	if got.n < 4<<20 || !got.isPrefixOf(5) {
		t.Fatalf("%d bytes arrived (err %v), prefix of what was sent: %v; want at least 4 MiB", got.n, got.err, got.isPrefixOf(5))
	}
	expectSessionGoesOn(t, d, f, old, tr.protocol, resets, resets0)
	return fmt.Sprintf("pod→client cut after %.1f MiB, a prefix", float64(got.n)/(1<<20))
}

// faultPodResetUpload: the pod resets its socket after reading 8 MiB of
// what the client sends. What the pod got is a prefix; the client's
// writes fail; the session goes on.
func faultPodResetUpload(t *testing.T, d *daemon, tr transport) string {
	const cut = 8 << 20
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	atPod := make(chan received, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		atPod <- receive(io.LimitReader(c, cut), 0, nil)
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		serveEcho(ln)
	}()
	resets := fmt.Sprintf(`portforwardd_streams_total{protocol=%q,result="reset"}`, tr.protocol)
	resets0 := d.metric(t, resets)
	f := startForward(t, d, tr, p.route(), port(ln))
	old := len(f.errors())
	c := f.dial(t)
	c.SetWriteDeadline(time.Now().Add(60 * time.Second))
	sent, werr := writePattern(c, 6, -1)
	if errors.Is(werr, os.ErrDeadlineExceeded) {
		t.Fatalf("the client could still not tell after 60 s that the pod reset (%d bytes written)", sent)
	}
	r := <-atPod
	if r.n != cut || !r.isPrefixOf(6) {
		t.Fatalf("the pod received %d bytes (err %v), prefix of what was sent: %v; want %d", r.n, r.err, r.isPrefixOf(6), cut)
	}
	expectSessionGoesOn(t, d, f, old, tr.protocol, resets, resets0)
	cause := "nil"
	if werr != nil {
		msg := werr.Error()
		cause = msg[strings.LastIndex(msg, ": ")+2:]
	}
	return fmt.Sprintf("client→pod: the pod's %d MiB a prefix, then the client's write failed (%s)", cut>>20, cause)
}

func expectSessionGoesOn(t *testing.T, d *daemon, f *forward, oldErrs int, protocol, resets string, resets0 float64) {
	t.Helper()
	eventually(t, 30*time.Second, func() (bool, string) {
		got := d.metric(t, resets)
		return got == resets0+1, fmt.Sprintf("%s went from %v to %v, want +1", resets, resets0, got)
	})
	ended := d.forwardsEnded(t, protocol)
	c := f.dial(t)
	echoOnce(t, c, "the session survived the pod's reset")
	if errs := f.errors()[oldErrs:]; len(errs) != 0 {
		t.Fatalf("the reset reached client-go as an error: %q", errs)
	}
	// The echo's forward ends once its connection closes, as ok or as
	// reset (client-go resets the data stream once it has read the pod's
	// end, which may come before the daemon's pump is done). The next
	// case of this transport counts resets from its own start: that end
	// must be counted before it begins.
	c.Close()
	eventually(t, 30*time.Second, func() (bool, string) {
		n := d.forwardsEnded(t, protocol)
		return n == ended+1, fmt.Sprintf("%s forwards ended: %v, want %v once the echo's connection closed", protocol, n, ended+1)
	})
}

// forwardsEnded is streams_total{protocol} summed over every result: the
// forwarded connections of protocol that have ended, and the streams
// refused.
func (d *daemon) forwardsEnded(t *testing.T, protocol string) float64 {
	t.Helper()
	prefix := fmt.Sprintf(`portforwardd_streams_total{protocol=%q,`, protocol)
	sum := 0.0
	for line := range strings.SplitSeq(d.scrape(t), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// faultClientKilled: the client process (the portforward CLI) is killed
// with SIGKILL while data moves both ways. Both directions end in a
// prefix; the daemon releases the session, the streams and the fds.
func faultClientKilled(t *testing.T, d *daemon, transportFlag string) string {
	before := d.usage(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	podGot := make(chan struct{})
	atPod := make(chan received, 1)
	podWrote := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		go func() {
			_, err := writePattern(c, 8, -1)
			podWrote <- err
		}()
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		atPod <- receive(c, 4<<20, func() { close(podGot) })
	}()
	cli := startCLI(t, "--server", "http://"+d.addr, "--transport", transportFlag, "--address", "127.0.0.1",
		"-n", p.namespace, p.name, ":"+strconv.Itoa(port(ln)))
	m := forwardingLine.FindStringSubmatch(cli.line(t))
	if m == nil {
		t.Fatalf("no Forwarding line from portforward; stderr %s", cli.stderr)
	}
	c := dialLocal(t, m[2])
	go writePattern(c, 7, -1)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	got := receive(c, 4<<20, func() {
		select {
		case <-podGot:
		case <-time.After(60 * time.Second):
			t.Error("the pod did not receive 4 MiB")
		}
		cli.cmd.Process.Kill() // SIGKILL
		<-cli.exited
	})
	if errors.Is(got.err, os.ErrDeadlineExceeded) || got.n < 4<<20 || !got.isPrefixOf(8) {
		t.Fatalf("client received %d bytes (err %v), prefix of what the pod sent: %v", got.n, got.err, got.isPrefixOf(8))
	}
	r := <-atPod
	if errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Fatalf("the pod's connection was not closed within 60 s of the client's death (%d bytes arrived)", r.n)
	}
	if r.n < 4<<20 || !r.isPrefixOf(7) {
		t.Fatalf("pod received %d bytes (err %v), prefix of what the client sent: %v", r.n, r.err, r.isPrefixOf(7))
	}
	if err := <-podWrote; err == nil {
		t.Fatal("the pod's writes never failed")
	}
	after := d.settle(t, before, 30*time.Second)
	return fmt.Sprintf("client got %.1f MiB, pod got %.1f MiB, both prefixes; sessions and streams gauges 0, %d→%d fds, %v→%v goroutines",
		float64(got.n)/(1<<20), float64(r.n)/(1<<20), before.fds, after.fds, before.goroutines, after.goroutines)
}

// faultManyStreams opens and closes 10,000 forwarded connections at a
// steady rate over a minute, spread over four client-go SPDY sessions.
func faultManyStreams(t *testing.T, d *daemon, ep *echoPod) string {
	const total, sessions, size = 10000, 4, 2 << 10
	const period = 60 * time.Second / total
	ok := `portforwardd_streams_total{protocol="spdy",result="ok"}`
	ok0 := d.metric(t, ok)
	var fs []*forward
	for range sessions {
		fs = append(fs, startForward(t, d, transports[0], ep.route(), ep.port))
	}
	var failed atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	tick := time.NewTicker(period)
	defer tick.Stop()
	start := time.Now()
	for i := range total {
		<-tick.C // pacing: one new connection per period
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := echoRandom(fs[i%sessions].local, size); err != nil {
				failed.Add(1)
				once.Do(func() { firstErr = err })
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d echoes failed; first: %v", n, total, firstErr)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		got := d.metric(t, ok) - ok0
		return got == total, fmt.Sprintf("streams_total{spdy,ok} grew by %v, want %d", got, total)
	})
	for _, f := range fs {
		if errs := f.errors(); len(errs) != 0 {
			t.Errorf("client-go reported errors: %q", errs)
		}
		f.close()
		if err := f.wait(t); err != nil {
			t.Errorf("ForwardPorts: %v", err)
		}
	}
	return fmt.Sprintf("%d/%d echoes of %d B correct in %v (%.0f/s), %d sessions", total, total, size, elapsed.Round(100*time.Millisecond), total/elapsed.Seconds(), sessions)
}

// faultManySessions holds 1,000 client-go SPDY sessions open at once, each
// with a forwarded echo, then closes them.
func faultManySessions(t *testing.T, d *daemon, ep *echoPod) string {
	const n = 1000
	start := time.Now()
	fs := openSessions(t, d, ep, n, 4<<10)
	setup := time.Since(start)
	active := `portforwardd_sessions_active{protocol="spdy"}`
	if got := d.metric(t, active); got != n {
		t.Fatalf("%s: %v with all %d sessions open, want %d", active, got, n, n)
	}
	rssOpen := d.rssMiB(t)
	fdsOpen := d.openFDs(t)
	// Every session still works while all of them are open.
	errc := make(chan error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i, f := range fs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := echoRandom(f.local, 4<<10); err != nil {
				errc <- fmt.Errorf("session %d, second echo: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for _, f := range fs {
		f.close()
	}
	for i, f := range fs {
		if err := f.wait(t); err != nil {
			t.Fatalf("session %d: ForwardPorts: %v", i, err)
		}
	}
	return fmt.Sprintf("%d sessions open at once (set up in %v); %d daemon fds and %d MiB RSS while open; 2 echoes each correct",
		n, setup.Round(100*time.Millisecond), fdsOpen, rssOpen)
}

// faultSIGTERM: SIGTERM with transfers in flight over SPDY, the WebSocket
// tunnel and connect-tcp. New sessions and new streams are refused, the
// transfers finish intact, and the daemon exits 0 within the drain
// timeout.
func faultSIGTERM(t *testing.T, d *daemon, drainTimeout time.Duration) string {
	const half = 8 << 20
	gate := make(chan struct{})
	type transfer struct {
		name string
		seed uint64
		conn *net.TCPConn
		r    io.Reader // what the client reads: conn, or bytes buffered behind a 101 first
		f    *forward
		got  chan received
	}
	var xs []*transfer
	for i, tr := range transports {
		p := newPod(t)
		ln := p.listen(t, "tcp4", "127.0.0.1:0")
		seed := uint64(20 + i)
		servePattern(ln, seed, 2*half, half, gate)
		f := startForward(t, d, tr, p.route(), port(ln))
		c := f.dial(t)
		xs = append(xs, &transfer{name: tr.name, seed: seed, conn: c, r: c, f: f})
	}
	{
		p := newPod(t)
		ln := p.listen(t, "tcp4", "127.0.0.1:0")
		servePattern(ln, 30, 2*half, half, gate)
		c, r := dialConnectTCP(t, d, rawPath(p, port(ln)))
		xs = append(xs, &transfer{name: "connect-tcp", seed: 30, conn: c, r: r})
	}
	var inFlight sync.WaitGroup
	for _, x := range xs {
		x.got = make(chan received, 1)
		x.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		inFlight.Add(1)
		go func() { x.got <- receive(x.r, half, inFlight.Done) }()
	}
	inFlight.Wait() // every transfer is half way

	sigterm := time.Now()
	exit := d.signal(t, syscall.SIGTERM)
	eventually(t, 10*time.Second, func() (bool, string) {
		resp, err := scrapeClient.Get("http://" + d.metricsAddr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable, "readyz " + resp.Status
	})
	if c, err := net.DialTimeout("tcp4", d.addr, 5*time.Second); err == nil {
		c.Close()
		t.Error("a new session could connect while draining")
	}
	for _, x := range xs {
		if x.f == nil {
			continue
		}
		c := x.f.dial(t)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if b, _ := io.ReadAll(c); len(b) != 0 {
			t.Errorf("%s: a new stream while draining read %d bytes", x.name, len(b))
		}
	}
	select {
	case code := <-exit:
		t.Fatalf("the daemon exited (%d) with transfers in flight", code)
	default:
	}
	close(gate)
	for _, x := range xs {
		r := <-x.got
		if r.err != nil || r.n != 2*half || !r.isPrefixOf(x.seed) {
			t.Errorf("%s: %d bytes, err %v, sha256 ok %v; want all %d", x.name, r.n, r.err, r.isPrefixOf(x.seed), 2*half)
		}
		x.conn.CloseWrite()
	}
	select {
	case code := <-exit:
		took := time.Since(sigterm)
		if code != 0 {
			t.Fatalf("exit code %d, want 0", code)
		}
		if took >= drainTimeout {
			t.Fatalf("exit %v after SIGTERM, not within the drain timeout %v", took, drainTimeout)
		}
		return fmt.Sprintf("%d transfers of %d MiB intact; new sessions and streams refused; exit 0 %v after SIGTERM (drain timeout %v)",
			len(xs), 2*half>>20, took.Round(10*time.Millisecond), drainTimeout)
	case <-time.After(drainTimeout):
		t.Fatalf("the daemon did not exit within the drain timeout once its transfers were done")
		return ""
	}
}
