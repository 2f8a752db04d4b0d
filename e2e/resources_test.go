package e2e

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// Helpers of the fault and bad-input suites: the daemon's resources
// (resident memory, fds, goroutines, gauges), deterministic byte streams
// whose prefixes can be checked, and a result table each suite prints.

// readRSSKiB reads VmRSS of pid; it is safe off the test goroutine.
func readRSSKiB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	return 0, errors.New("no VmRSS line")
}

// rssSampler samples the daemon's resident set every 5 ms and keeps the
// peak, so a spike between two test steps is not missed.
type rssSampler struct {
	stop    chan struct{}
	done    chan struct{}
	peakKiB atomic.Int64
}

func (d *daemon) sampleRSS() *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	pid := d.cmd.Process.Pid
	go func() {
		defer close(s.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if kb, err := readRSSKiB(pid); err == nil && int64(kb) > s.peakKiB.Load() {
				s.peakKiB.Store(int64(kb))
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// peakMiB stops the sampler and returns the highest RSS it saw.
func (s *rssSampler) peakMiB() int {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	return int(s.peakKiB.Load() >> 10)
}

// collectGarbage makes the daemon run a garbage collection (it must run
// with --pprof: the heap profile's gc=1 collects first).
func (d *daemon) collectGarbage(t *testing.T) {
	t.Helper()
	resp, err := scrapeClient.Get("http://" + d.metricsAddr + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatalf("GET /debug/pprof/heap: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /debug/pprof/heap: %s (is the daemon running with --pprof?)", resp.Status)
	}
}

// metricSum adds up every series of one metric, whatever its labels (for
// example every protocol of portforwardd_sessions_active).
func (d *daemon) metricSum(t *testing.T, name string) float64 {
	t.Helper()
	sum := 0.0
	for line := range strings.SplitSeq(d.scrape(t), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// usage is what the daemon holds: open fds and goroutines.
type usage struct {
	fds        int
	goroutines float64
}

func (u usage) String() string { return fmt.Sprintf("%d fds, %v goroutines", u.fds, u.goroutines) }

func (d *daemon) usage(t *testing.T) usage {
	t.Helper()
	return usage{fds: d.openFDs(t), goroutines: d.metric(t, "go_goroutines")}
}

// settle waits until the daemon holds no more than base, with no session
// and no forwarded connection left, and returns what it then holds.
func (d *daemon) settle(t *testing.T, base usage, timeout time.Duration) usage {
	t.Helper()
	return d.settleWith(t, base, 0, 0, timeout)
}

// settleWith is settle for a daemon that keeps sessions and streams
// forwarded connections open throughout.
func (d *daemon) settleWith(t *testing.T, base usage, sessions, streams float64, timeout time.Duration) usage {
	t.Helper()
	var now usage
	eventually(t, timeout, func() (bool, string) {
		now = d.usage(t)
		s := d.metricSum(t, "portforwardd_sessions_active")
		f := d.metricSum(t, "portforwardd_streams_active")
		return now.fds <= base.fds && now.goroutines <= base.goroutines && s == sessions && f == streams,
			fmt.Sprintf("daemon holds %v (before: %v), sessions_active %v (want %v), streams_active %v (want %v)",
				now, base, s, sessions, f, streams)
	})
	return now
}

// pattern is a deterministic byte stream: the same seed always gives the
// same bytes, so a receiver can check that what arrived is a prefix of
// what was sent without the sender keeping a copy.
func pattern(seed uint64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return rand.NewChaCha8(key)
}

// patternSum is the sha256 of the first n bytes of pattern(seed).
func patternSum(seed uint64, n int64) [32]byte {
	h := sha256.New()
	io.Copy(h, io.LimitReader(pattern(seed), n))
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// received hashes what a reader delivers. mark is called once, as soon as
// at least markAt bytes have arrived.
type received struct {
	n      int64
	sum    [32]byte
	err    error
	marked bool
}

func receive(r io.Reader, markAt int64, mark func()) received {
	h := sha256.New()
	var res received
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		h.Write(buf[:n])
		res.n += int64(n)
		if !res.marked && res.n >= markAt && mark != nil {
			res.marked = true
			mark()
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				res.err = err
			}
			break
		}
	}
	copy(res.sum[:], h.Sum(nil))
	return res
}

// isPrefixOf reports whether what arrived is the start of pattern(seed).
func (r received) isPrefixOf(seed uint64) bool { return r.sum == patternSum(seed, r.n) }

// writePattern writes pattern(seed) to w, n bytes or, for n < 0, until a write
// fails; it returns the bytes written and the error that stopped it.
func writePattern(w io.Writer, seed uint64, n int64) (int64, error) {
	src := pattern(seed)
	if n >= 0 {
		src = io.LimitReader(src, n)
	}
	buf := make([]byte, 64<<10)
	var total int64
	for {
		m, err := src.Read(buf)
		if m > 0 {
			k, werr := w.Write(buf[:m])
			total += int64(k)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
	}
}

// newForward is startForward for use off the test goroutine and at scale:
// it returns errors instead of failing the test, and does not scrape the
// daemon. The caller closes the forward.
// openSessions opens n client-go SPDY sessions to ep, 16 at a time, and
// checks each with an echo of echo bytes. They are closed when the test
// ends, if the test has not closed them.
func openSessions(t *testing.T, d *daemon, ep *echoPod, n, echo int) []*forward {
	t.Helper()
	fs := make([]*forward, n)
	errc := make(chan error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f, err := newForward(d, ep.route(), ep.port)
			if err != nil {
				errc <- fmt.Errorf("session %d: %w", i, err)
				return
			}
			fs[i] = f
			if err := echoRandom(f.local, echo); err != nil {
				errc <- fmt.Errorf("session %d, first echo: %w", i, err)
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, f := range fs {
			if f != nil {
				f.close()
			}
		}
	})
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	return fs
}

func newForward(d *daemon, route string, remotePort int) (*forward, error) {
	rt, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: "http://" + d.addr})
	if err != nil {
		return nil, err
	}
	u := &url.URL{Scheme: "http", Host: d.addr, Path: route}
	dialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	f := &forward{stop: make(chan struct{}), done: make(chan error, 1)}
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", remotePort)}, f.stop, ready, io.Discard, io.Discard)
	if err != nil {
		return nil, err
	}
	f.pf = pf
	go func() { f.done <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-f.done:
		return nil, fmt.Errorf("ForwardPorts: %w", err)
	case <-time.After(60 * time.Second):
		f.close()
		return nil, errors.New("port-forward not ready within 60s")
	}
	ports, err := pf.GetPorts()
	if err != nil {
		f.close()
		return nil, err
	}
	f.local = int(ports[0].Local)
	forwardErrors.forget(f.local)
	return f, nil
}

// echoPod is a pod whose server echoes every connection: the "next
// client" of every case, and the healthy session kept beside bad input.
type echoPod struct {
	*pod
	port int
}

func newEchoPod(t *testing.T) *echoPod {
	t.Helper()
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	return &echoPod{pod: p, port: port(ln)}
}

// servesNextClient checks that a fresh client-go port-forward session works:
// 256 KiB echoed with a matching sha256, and the session closed again.
func servesNextClient(t *testing.T, d *daemon, ep *echoPod) {
	t.Helper()
	f, err := newForward(d, ep.route(), ep.port)
	if err != nil {
		t.Fatalf("the next client could not set up a port-forward: %v", err)
	}
	defer func() {
		f.close()
		f.wait(t)
	}()
	// Local ports are reused; only messages from now on are this session's.
	old := len(f.errors())
	if err := echoRandom(f.local, 256<<10); err != nil {
		t.Fatalf("the next client's echo: %v", err)
	}
	if errs := f.errors()[old:]; len(errs) != 0 {
		t.Fatalf("the next client's session reported errors: %q", errs)
	}
}

// healthy is a client-go session kept open beside a bad-input case, with
// one forwarded connection that stays open across the case.
type healthy struct {
	f       *forward
	conn    *net.TCPConn
	n       int
	oldErrs int // messages logged for the local port before this session
}

func newHealthy(t *testing.T, d *daemon, ep *echoPod) *healthy {
	t.Helper()
	h := &healthy{f: startForward(t, d, transports[0], ep.route(), ep.port)}
	h.oldErrs = len(h.f.errors())
	h.conn = h.f.dial(t)
	h.check(t)
	return h
}

// check echoes through the connection held open across the case and
// through a new connection of the same session.
func (h *healthy) check(t *testing.T) {
	t.Helper()
	h.n++
	echoOnce(t, h.conn, fmt.Sprintf("healthy session, check %d", h.n))
	if err := echoRandom(h.f.local, 64<<10); err != nil {
		t.Fatalf("healthy session, new connection: %v", err)
	}
	if errs := h.f.errors()[h.oldErrs:]; len(errs) != 0 {
		t.Fatalf("healthy session reported errors: %q", errs)
	}
}

// results collects one row per case and prints a Markdown table.
type results struct {
	mu   sync.Mutex
	rows [][]string
}

func (r *results) add(row ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, row)
}

func (r *results) table(header ...string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("| " + strings.Join(header, " | ") + " |\n|")
	for range header {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, row := range r.rows {
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	return b.String()
}

func outcome(t *testing.T, ok string) string {
	if t.Failed() {
		return "FAIL"
	}
	return ok
}
