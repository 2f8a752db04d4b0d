package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/portforwardd/portforwardd/nsenter/nsentertest"
)

// TestSoak mixes every transport for a while against one daemon: client-go
// SPDY and WebSocket tunnel sessions, v4 WebSocket, raw connect-tcp,
// HTTP/2 streams and the CLI, with normal closes, client aborts mid-transfer,
// pods that never read, pods that close early, a pod whose namespace is
// deleted and made again under open forwards, and sessions with many
// streams. Once the load has stopped and every client is gone, every gauge
// must be back at zero and the daemon's goroutines and fds at what it held
// before. PORTFORWARDD_SOAK=25m runs it that long (default 15s);
// PORTFORWARDD_SOAK_ONLY=h2,raw runs only those workers (spdy, tunnel, v4,
// raw, h2, cli, churn); PORTFORWARDD_SOAK_DUMP=DIR writes the daemon's and
// the test's goroutines there when a client waits too long, and the
// daemon's heap profile at the end.
//
// The pod that never reads is hard on the node's TCP memory: each forward
// to it that ends by an abort leaves the pod socket's unsent bytes (up to
// the socket's send buffer) to the kernel, which tries to deliver them for
// minutes. A long run at this load can fill tcp_mem, and connections of
// every process on the node then stall.
func TestSoak(t *testing.T) {
	dur := 15 * time.Second
	if v := os.Getenv("PORTFORWARDD_SOAK"); v != "" {
		var err error
		if dur, err = time.ParseDuration(v); err != nil {
			t.Fatalf("PORTFORWARDD_SOAK=%q: %v", v, err)
		}
	}
	d := startDaemon(t, "--pprof", "--log-level", "info")
	sp := newSoakPods(t)

	// The idle state, after one session of each kind has come and gone.
	servesNextClient(t, d, &echoPod{pod: sp.pod, port: sp.echo})
	eventually(t, 30*time.Second, func() (bool, string) {
		s := d.metricSum(t, "portforwardd_sessions_active")
		return s == 0, fmt.Sprintf("sessions_active %v after the warm-up", s)
	})
	base := d.usage(t)
	rss0 := d.rssMiB(t)
	t.Logf("soak: baseline %v, RSS %d MiB; load for %v", base, rss0, dur)

	s := &soak{d: d, sp: sp, stop: make(chan struct{})}
	var wg sync.WaitGroup
	workers := []struct {
		name string
		run  func(r *mrand.Rand) error
	}{
		{"spdy", func(r *mrand.Rand) error { return s.clientGoSession(r, false) }},
		{"tunnel", func(r *mrand.Rand) error { return s.clientGoSession(r, true) }},
		{"v4", s.v4Session},
		{"raw", s.rawConn},
		{"h2", s.h2Session},
		{"cli", s.cliRun},
		{"churn", s.churn},
	}
	only := os.Getenv("PORTFORWARDD_SOAK_ONLY")
	for i, w := range workers {
		if only != "" && !strings.Contains(","+only+",", ","+w.name+",") {
			continue
		}
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(uint64(i), 42))
			for !s.stopped() {
				if err := w.run(r); err != nil {
					s.fail(w.name, err)
				}
				s.count(w.name)
				time.Sleep(time.Duration(50+r.IntN(200)) * time.Millisecond) // pacing: the machine is shared
			}
		})
	}

	// Sample the daemon while the load runs.
	peak := sample{}
	every := max(dur/25, 2*time.Second)
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		time.Sleep(min(every, time.Until(deadline)))
		now := s.sample(t)
		peak = peak.max(now)
		t.Logf("soak: %s %v", time.Since(deadline.Add(-dur)).Round(time.Second), now)
	}
	close(s.stop)
	waitGroup(t, &wg, 2*time.Minute, "the soak's workers", func() { s.dumped.Store(false); s.dumpDaemon("workers") })
	t.Logf("soak: runs %v; unexpected errors %d, first: %v", s.counts(), s.errs.Load(), s.firstErr())
	t.Logf("soak: peak %v", peak)

	// The pod that never reads holds its connections until the client
	// closes them; all are closed now. Every gauge goes back to zero.
	sp.closeSinks()
	var now sample
	t.Cleanup(func() {
		if t.Failed() {
			s.dumped.Store(false)
			s.dumpDaemon("end")
		}
	})
	eventually(t, 60*time.Second, func() (bool, string) {
		now = s.sample(t)
		return now.gaugesZero() && now.fds <= base.fds && now.goroutines <= base.goroutines,
			fmt.Sprintf("after the load: %v; baseline %v", now, base)
	})
	t.Logf("soak: end %v (baseline %v, RSS %d MiB)", now, base, rss0)
	if dump := os.Getenv("PORTFORWARDD_SOAK_DUMP"); dump != "" {
		time.Sleep(10 * time.Second) // not synchronization: the RSS reading 10 s on
		t.Logf("soak: 10 s later %v", s.sample(t))
		d.collectGarbage(t)
		resp, err := scrapeClient.Get("http://" + d.metricsAddr + "/debug/pprof/heap")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			os.WriteFile(dump+"/soak-heap.pb.gz", b, 0o644)
		}
	}
	if n := s.errs.Load(); n > 0 {
		t.Errorf("%d unexpected errors, first: %v", n, s.firstErr())
	}
}

// soakPods is one pod with a server of each kind on its own port, and a
// second pod (churn) whose namespace is deleted and made again.
type soakPods struct {
	t *testing.T
	*pod
	echo, sink, early, down int

	mu    sync.Mutex
	sinks []net.Conn
}

func newSoakPods(t *testing.T) *soakPods {
	p := newPod(t)
	sp := &soakPods{t: t, pod: p}
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	sp.echo = port(ln)
	// sink never reads: it holds each connection until the soak ends.
	sinkLn := p.listen(t, "tcp4", "127.0.0.1:0")
	go func() {
		for {
			c, err := sinkLn.Accept()
			if err != nil {
				return
			}
			sp.mu.Lock()
			sp.sinks = append(sp.sinks, c)
			sp.mu.Unlock()
		}
	}()
	sp.sink = port(sinkLn)
	// early reads a little, answers, and closes with data unread (a reset).
	ln = p.listen(t, "tcp4", "127.0.0.1:0")
	serveEach(ln, func(c *net.TCPConn) {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.Read(make([]byte, 100))
		io.WriteString(c, "bye")
	})
	sp.early = port(ln)
	// down sends 4 MiB and closes.
	ln = p.listen(t, "tcp4", "127.0.0.1:0")
	serveEach(ln, func(c *net.TCPConn) {
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		c.Write(make([]byte, 4<<20))
	})
	sp.down = port(ln)
	t.Cleanup(sp.closeSinks)
	return sp
}

// closeSinks closes the connections the sink holds (some forwards sit on
// them: their clients closed, the daemon waits for the pod).
func (sp *soakPods) closeSinks() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for _, c := range sp.sinks {
		c.Close()
	}
	sp.sinks = nil
}

type soak struct {
	d    *daemon
	sp   *soakPods
	stop chan struct{}

	errs   atomic.Int64
	mu     sync.Mutex
	first  error
	runs   map[string]int
	dumped atomic.Bool
}

func (s *soak) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

func (s *soak) fail(name string, err error) {
	s.errs.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.first == nil {
		s.first = fmt.Errorf("%s: %w", name, err)
	}
}

func (s *soak) firstErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

func (s *soak) count(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runs == nil {
		s.runs = map[string]int{}
	}
	s.runs[name]++
}

func (s *soak) counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.runs)
}

// sample is what the daemon holds at one moment.
type sample struct {
	fds, rssMiB       int
	goroutines        float64
	sessions, streams float64
	buffered, tokens  float64
	heapMiB           float64
}

func (a sample) max(b sample) sample {
	return sample{
		fds: max(a.fds, b.fds), rssMiB: max(a.rssMiB, b.rssMiB), goroutines: max(a.goroutines, b.goroutines),
		sessions: max(a.sessions, b.sessions), streams: max(a.streams, b.streams),
		buffered: max(a.buffered, b.buffered), tokens: max(a.tokens, b.tokens),
		heapMiB: max(a.heapMiB, b.heapMiB),
	}
}

func (a sample) gaugesZero() bool {
	return a.sessions == 0 && a.streams == 0 && a.buffered == 0 && a.tokens == 0
}

func (a sample) String() string {
	return fmt.Sprintf("fds %d, goroutines %v, RSS %d MiB, heap in use %.1f MiB, sessions %v, streams %v, buffered %v B, tokens %v",
		a.fds, a.goroutines, a.rssMiB, a.heapMiB, a.sessions, a.streams, a.buffered, a.tokens)
}

func (s *soak) sample(t *testing.T) sample {
	t.Helper()
	text := s.d.scrape(t)
	sum := func(name string) float64 {
		v := 0.0
		for line := range strings.SplitSeq(text, "\n") {
			if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
				f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
				if err != nil {
					t.Fatalf("metric line %q: %v", line, err)
				}
				v += f
			}
		}
		return v
	}
	return sample{
		fds:        s.d.openFDs(t),
		rssMiB:     s.d.rssMiB(t),
		goroutines: sum("go_goroutines"),
		sessions:   sum("portforwardd_sessions_active"),
		streams:    sum("portforwardd_streams_active"),
		buffered:   sum("portforwardd_buffered_bytes"),
		tokens:     sum("portforwardd_cri_tokens_outstanding"),
		heapMiB:    sum("go_memstats_heap_inuse_bytes") / (1 << 20),
	}
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, within time.Duration, what string, onTimeout func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
		onTimeout()
		t.Fatalf("%s did not end within %v", what, within)
	}
}

// conn is one forwarded connection as a client holds it.
type soakConn interface {
	io.ReadWriter
	CloseWrite() error
	Close() error
	abort() // a reset (TCP) or RST_STREAM (HTTP/2)
}

type tcpConn struct{ *net.TCPConn }

func (c tcpConn) abort() { c.SetLinger(0); c.Close() }

// exercise runs one random kind of forwarded connection over c, to the
// pod's port named by kind, and closes c. Only an echo that went wrong is
// an error: the others end as they may.
func exercise(r *mrand.Rand, c soakConn, kind string) error {
	defer c.Close()
	if d, ok := c.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Now().Add(30 * time.Second))
	}
	switch kind {
	case "echo":
		data := make([]byte, 1+r.IntN(256<<10))
		rand.Read(data)
		go func() { c.Write(data); c.CloseWrite() }()
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, data) {
			return fmt.Errorf("echo of %d bytes: got %d, %v", len(data), len(got), err)
		}
	case "echo-abort": // the client resets mid-transfer
		go c.Write(make([]byte, 2<<20))
		io.ReadFull(c, make([]byte, r.IntN(512<<10)))
		c.abort()
	case "sink": // the pod never reads
		size := 1 + r.IntN(4<<20) // r is this goroutine's only
		go func() { c.Write(make([]byte, size)) }()
		time.Sleep(time.Duration(r.IntN(300)) * time.Millisecond) // workload timing
		if r.IntN(2) == 0 {
			c.abort()
		}
	case "early": // the pod closes with data unread
		go c.Write(make([]byte, 64<<10))
		io.Copy(io.Discard, c)
	case "down": // a download, read whole or cut
		if r.IntN(2) == 0 {
			io.Copy(io.Discard, c)
		} else {
			io.ReadFull(c, make([]byte, r.IntN(1<<20)))
			c.abort()
		}
	}
	return nil
}

var soakKinds = []string{"echo", "echo", "echo-abort", "sink", "early", "down"}

func (sp *soakPods) portOf(kind string) int {
	switch kind {
	case "echo", "echo-abort":
		return sp.echo
	case "sink":
		return sp.sink
	case "early":
		return sp.early
	}
	return sp.down
}

// clientGoSession runs one client-go port-forward session (SPDY, or the
// WebSocket tunnel) for the four ports, makes 1 to 40 connections through
// it, several at once, and ends it: normally, or with connections still
// open (an abort mid-transfer).
func (s *soak) clientGoSession(r *mrand.Rand, tunnel bool) error {
	cfg := &rest.Config{Host: "http://" + s.d.addr}
	u := &url.URL{Scheme: "http", Host: s.d.addr, Path: s.sp.route()}
	var dialer streamhttp.Dialer
	if tunnel {
		d, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, cfg)
		if err != nil {
			return err
		}
		dialer = d
	} else {
		rt, upgrader, err := spdy.RoundTripperFor(cfg)
		if err != nil {
			return err
		}
		dialer = spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	}
	kinds := []string{"echo", "sink", "early", "down"}
	specs := make([]string, len(kinds))
	for i, k := range kinds {
		specs[i] = fmt.Sprintf("0:%d", s.sp.portOf(k))
	}
	stop, ready, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	pf, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, specs, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return err
	}
	go func() { done <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		return fmt.Errorf("ForwardPorts: %w", err)
	case <-time.After(30 * time.Second):
		close(stop)
		return errors.New("port-forward not ready within 30s")
	}
	ports, err := pf.GetPorts()
	if err != nil {
		close(stop)
		return err
	}
	local := map[string]int{}
	for i, k := range kinds {
		local[k] = int(ports[i].Local)
	}
	n := 1 + r.IntN(40)
	abortSession := r.IntN(4) == 0
	var wg sync.WaitGroup
	var first firstError
	sem := make(chan struct{}, 8)
	for i := range n {
		kind := soakKinds[r.IntN(len(soakKinds))]
		seed := r.Uint64()
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", local[strings.TrimSuffix(kind, "-abort")]))
			if err != nil {
				return
			}
			err = exercise(mrand.New(mrand.NewPCG(seed, uint64(i))), tcpConn{c.(*net.TCPConn)}, kind)
			if !abortSession {
				first.set(err)
			}
		})
		if abortSession && i == n/2 {
			break
		}
	}
	if !abortSession {
		wg.Wait()
	}
	close(stop)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		return errors.New("ForwardPorts did not return within 30s of stop")
	}
	wg.Wait()
	// A session whose pod reset a connection may have reported it on the
	// error stream; client-go then ends nothing. Only echo mismatches
	// land here.
	return first.get()
}

// firstError keeps the first non-nil error set, from any goroutine.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// rawConn makes one connect-tcp forward.
func (s *soak) rawConn(r *mrand.Rand) error {
	kind := soakKinds[r.IntN(len(soakKinds))]
	c, err := net.Dial("tcp4", s.d.addr)
	if err != nil {
		return err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET %s?port=%d HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n", s.sp.route(), s.sp.portOf(kind))
	// Read the answer byte by byte so no forwarded byte is taken with it.
	var head []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := c.Read(b); err != nil {
			c.Close()
			return fmt.Errorf("read upgrade answer: %w", err)
		}
		head = append(head, b[0])
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
		c.Close()
		return fmt.Errorf("connect-tcp: %q", head)
	}
	return exercise(r, tcpConn{c.(*net.TCPConn)}, kind)
}

// h2Conn is one HTTP/2 stream as a soakConn.
type h2Conn struct {
	body   io.ReadCloser
	pw     *io.PipeWriter
	cancel context.CancelFunc
}

func (c *h2Conn) Read(p []byte) (int, error)  { return c.body.Read(p) }
func (c *h2Conn) Write(p []byte) (int, error) { return c.pw.Write(p) }
func (c *h2Conn) CloseWrite() error           { return c.pw.Close() }
func (c *h2Conn) Close() error                { c.pw.Close(); c.body.Close(); c.cancel(); return nil }
func (c *h2Conn) abort()                      { c.cancel(); c.pw.CloseWithError(errors.New("aborted")) }

// h2Session runs 1 to 30 streams on one HTTP/2 connection, several at
// once, and drops the connection: closed when idle, or cut with streams
// open.
func (s *soak) h2Session(r *mrand.Rand) error {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	var connMu sync.Mutex
	var conns []net.Conn
	tr := &http.Transport{Protocols: &p, MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				connMu.Lock()
				conns = append(conns, c)
				connMu.Unlock()
			}
			return c, err
		}}
	client := &http.Client{Transport: tr}
	defer func() {
		// The client is gone: its connections with it.
		tr.CloseIdleConnections()
		connMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connMu.Unlock()
	}()
	n := 1 + r.IntN(30)
	cut := r.IntN(4) == 0
	var wg sync.WaitGroup
	var first firstError
	sem := make(chan struct{}, 8)
	for i := range n {
		kind := soakKinds[r.IntN(len(soakKinds))]
		seed := r.Uint64()
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			pr, pw := io.Pipe()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h2URL(s.d, s.sp.pod, s.sp.portOf(kind)), pr)
			resp, err := client.Do(req)
			if err != nil {
				cancel()
				pw.Close()
				return
			}
			if resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				cancel()
				pw.Close()
				return
			}
			// Go's client does not end a body read at the request's
			// deadline while it waits to send more of the body.
			stall := time.AfterFunc(20*time.Second, func() {
				s.dumpDaemon("h2 " + kind)
				resp.Body.Close()
			})
			err = exercise(mrand.New(mrand.NewPCG(seed, uint64(i))), &h2Conn{resp.Body, pw, cancel}, kind)
			stall.Stop()
			if !cut {
				first.set(err)
			}
		})
		if cut && i == n/2 {
			break
		}
	}
	if cut {
		// Drop the connection with streams open (workload timing, not
		// synchronization: streams not yet open make the cut no less a
		// cut).
		time.Sleep(50 * time.Millisecond)
		connMu.Lock()
		for _, c := range conns {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
		connMu.Unlock()
	}
	wg.Wait()
	return first.get()
}

// v4Session opens a v4 WebSocket for the echo and download ports, echoes
// on the first, reads some of the second, and ends: with a normal close,
// or by dropping the TCP connection.
func (s *soak) v4Session(r *mrand.Rand) error {
	q := url.Values{}
	q.Add("port", strconv.Itoa(s.sp.echo))
	q.Add("port", strconv.Itoa(s.sp.down))
	if r.IntN(3) == 0 {
		q.Add("port", strconv.Itoa(s.sp.sink))
	}
	u := url.URL{Scheme: "ws", Host: s.d.addr, Path: s.sp.route(), RawQuery: q.Encode()}
	dialer := websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := dialer.Dial(u.String(), nil)
	if err != nil {
		return err
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	msg := make([]byte, 1+r.IntN(64<<10))
	rand.Read(msg)
	if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{0}, msg...)); err != nil {
		return err
	}
	if len(q["port"]) == 3 {
		// Write into the sink's channel too: the pod never reads it.
		ws.WriteMessage(websocket.BinaryMessage, append([]byte{4}, make([]byte, 256<<10)...))
	}
	for range 2 * len(q["port"]) { // the port prefixes
		if _, _, err := ws.ReadMessage(); err != nil {
			return fmt.Errorf("v4 read prefixes: %w", err)
		}
	}
	var echoed []byte
	for len(echoed) < len(msg) {
		_, m, err := ws.ReadMessage()
		if err != nil {
			return fmt.Errorf("v4 read: %w", err)
		}
		if len(m) > 0 && m[0] == 0 {
			echoed = append(echoed, m[1:]...)
		}
	}
	if !bytes.Equal(echoed, msg) {
		return fmt.Errorf("v4 echo of %d bytes differs", len(msg))
	}
	if r.IntN(2) == 0 {
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(10*time.Second))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return nil
			}
		}
	}
	ws.UnderlyingConn().(*net.TCPConn).SetLinger(0)
	return nil
}

// cliRun runs the portforward CLI with a random transport for the echo
// port, makes a few connections through it and stops it with SIGTERM.
func (s *soak) cliRun(r *mrand.Rand) error {
	transports := []string{"auto", "spdy", "websocket", "raw", "h2"}
	tr := transports[r.IntN(len(transports))]
	cmd := exec.Command(cliBin, "--server", "http://"+s.d.addr, "--transport", tr, "--address", "127.0.0.1",
		"-n", s.sp.namespace, s.sp.name, fmt.Sprintf(":%d", s.sp.echo))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	lines := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		var acc []byte
		for {
			n, err := out.Read(buf)
			acc = append(acc, buf[:n]...)
			for {
				i := bytes.IndexByte(acc, '\n')
				if i < 0 {
					break
				}
				select {
				case lines <- string(acc[:i]):
				default:
				}
				acc = acc[i+1:]
			}
			if err != nil {
				close(lines)
				exited <- cmd.Wait()
				return
			}
		}
	}()
	var local int
	select {
	case l, ok := <-lines:
		if !ok {
			return fmt.Errorf("portforward --transport %s exited: %s", tr, stderr.String())
		}
		if _, err := fmt.Sscanf(l, "Forwarding from 127.0.0.1:%d ->", &local); err != nil {
			return fmt.Errorf("portforward said %q", l)
		}
	case <-time.After(30 * time.Second):
		return errors.New("portforward did not start")
	}
	for i := range 1 + r.IntN(5) {
		c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", local))
		if err != nil {
			return err
		}
		kind := "echo"
		if i%3 == 2 {
			kind = "echo-abort"
		}
		if err := exercise(r, tcpConn{c.(*net.TCPConn)}, kind); err != nil {
			return fmt.Errorf("--transport %s: %w", tr, err)
		}
	}
	return nil
}

// churn makes a pod, opens forwards into it over every transport, deletes
// its namespace (its server goes on inside), makes it again under the
// same name with a new server, forwards into the new one, and then ends
// everything.
func (s *soak) churn(r *mrand.Rand) error {
	ns := fmt.Sprintf("soak-%d", os.Getpid())
	name := fmt.Sprintf("churn-%d", r.IntN(1000))
	netns := ns + "_" + name
	path := "/run/netns/" + netns
	mk := func() (net.Listener, error) {
		if out, err := exec.Command("ip", "netns", "add", netns).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip netns add: %v: %s", err, out)
		}
		exec.Command("ip", "-n", netns, "link", "set", "lo", "up").Run()
		ln, err := nsentertest.Listen(path, "tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		serveEcho(ln)
		return ln, nil
	}
	defer exec.Command("ip", "netns", "del", netns).Run()
	p := &pod{namespace: ns, name: name, netnsName: netns, path: path}
	var open []io.Closer
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	round := func() (net.Listener, error) {
		ln, err := mk()
		if err != nil {
			return nil, err
		}
		open = append(open, ln)
		pt := port(ln)
		// raw
		if c, err := net.Dial("tcp4", s.d.addr); err == nil {
			fmt.Fprintf(c, "GET %s?port=%d HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n", p.route(), pt)
			open = append(open, c)
		}
		// h2
		var hp http.Protocols
		hp.SetUnencryptedHTTP2(true)
		var hconn net.Conn
		var hmu sync.Mutex
		htr := &http.Transport{Protocols: &hp, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			hmu.Lock()
			hconn = c
			hmu.Unlock()
			return c, err
		}}
		pr, pw := io.Pipe()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h2URL(s.d, p, pt), pr)
		go func() {
			if resp, err := (&http.Client{Transport: htr}).Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		pw.Write([]byte("x"))
		open = append(open, closerFunc(func() error {
			cancel()
			pw.Close()
			htr.CloseIdleConnections()
			hmu.Lock()
			defer hmu.Unlock()
			if hconn != nil {
				hconn.Close()
			}
			return nil
		}))
		// v4
		u := url.URL{Scheme: "ws", Host: s.d.addr, Path: p.route(), RawQuery: "port=" + strconv.Itoa(pt)}
		if ws, _, err := (&websocket.Dialer{HandshakeTimeout: 10 * time.Second}).Dial(u.String(), nil); err == nil {
			ws.WriteMessage(websocket.BinaryMessage, []byte{0, 'x'})
			open = append(open, ws)
		}
		// spdy
		rt, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: "http://" + s.d.addr})
		if err != nil {
			return nil, err
		}
		dialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, http.MethodPost, &url.URL{Scheme: "http", Host: s.d.addr, Path: p.route()})
		stop, ready, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
		pf, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", pt)}, stop, ready, io.Discard, io.Discard)
		if err != nil {
			return nil, err
		}
		go func() { done <- pf.ForwardPorts() }()
		select {
		case <-ready:
			ports, _ := pf.GetPorts()
			if c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", ports[0].Local)); err == nil {
				c.Write([]byte("x"))
				open = append(open, c)
			}
		case <-done:
		case <-time.After(30 * time.Second):
		}
		open = append(open, closerFunc(func() error {
			close(stop)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
			}
			return nil
		}))
		return ln, nil
	}
	if _, err := round(); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond) // workload timing: forwards open while the netns goes
	if out, err := exec.Command("ip", "netns", "del", netns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del: %v: %s", err, out)
	}
	if _, err := round(); err != nil {
		return err
	}
	time.Sleep(time.Duration(200+r.IntN(800)) * time.Millisecond)
	return nil
}

// dumpDaemon writes the daemon's goroutines to a file, once, when a
// client has waited too long (for finding what holds it).
func (s *soak) dumpDaemon(what string) {
	dir := os.Getenv("PORTFORWARDD_SOAK_DUMP")
	if dir == "" || !s.dumped.CompareAndSwap(false, true) {
		return
	}
	resp, err := scrapeClient.Get("http://" + s.d.metricsAddr + "/debug/pprof/goroutine?debug=2")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	ss, _ := exec.Command("ip", "netns", "exec", s.sp.netnsName, "ss", "-tnoi").CombinedOutput()
	ss2, _ := exec.Command("ss", "-tnoi").CombinedOutput()
	buf := make([]byte, 16<<20)
	os.WriteFile(dir+"/soak-stall-test.txt", buf[:runtime.Stack(buf, true)], 0o644)
	os.WriteFile(dir+"/soak-stall.txt", append([]byte(what+fmt.Sprintf(" ports echo %d sink %d early %d down %d\n", s.sp.echo, s.sp.sink, s.sp.early, s.sp.down)+string(ss)+"\n----host\n"+string(ss2)+"\n"), b...), 0o644)
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }
