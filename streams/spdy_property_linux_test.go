package streams

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"k8s.io/streaming/pkg/httpstream"
)

// The behaviours a forward of TestSPDYForwardsKeepOrderAndCounts draws.
type propBehaviour int

const (
	propUpload         propBehaviour = iota // bulk upload, the pod reads fast
	propSlowUpload                          // upload, the pod reads slowly in random sizes
	propDownload                            // bulk download
	propBothWays                            // upload and download at once
	propPodReset                            // the pod resets (SO_LINGER 0) part-way through an upload
	propClientReset                         // the client resets its data stream part-way, both ways running
	propEarlyHalfClose                      // the client sends a little and half-closes; the pod then answers
	propBehaviours
)

var propBehaviourNames = [propBehaviours]string{"upload", "slow upload", "download", "both ways", "pod reset", "client reset", "early half-close"}

func (b propBehaviour) String() string { return propBehaviourNames[b] }

// propForward is one forward of the property test: its plan, and what
// its client and its pod saw.
type propForward struct {
	i       int
	b       propBehaviour
	seed    uint64
	up      int64 // bytes the client plans to send
	down    int64 // bytes the pod plans to send (-1: until its writes fail)
	resetAt int64 // bytes after which the pod (or the client) resets
	ln      net.Listener
	port    uint16

	// The pod's side, written by its goroutine before podDone closes.
	podGot                  atomic.Int64 // bytes the pod read (polled while it runs)
	podSum                  [32]byte     // sha256 of them
	podSent                 int64        // bytes the pod's writes took
	podReadErr, podWriteErr error
	podDone                 chan struct{}

	// The client's side, written before clientDone closes.
	clientSent int64 // bytes the client's writes took
	clientGot  atomic.Int64
	clientSum  [32]byte
	clientErr  error
	clientDone chan struct{}
}

// propStream is the byte stream one side of forward f sends: the same
// bytes however they are cut into writes, so a receiver's bytes can be
// checked as a prefix of it.
func propStream(f *propForward, dir Direction) *rand.ChaCha8 {
	var key [32]byte
	copy(key[:], fmt.Sprintf("%d/%d/%d", f.seed, f.i, dir))
	return rand.NewChaCha8(key)
}

// propPrefixSum is the sha256 of the first n bytes forward f's dir sends.
func propPrefixSum(f *propForward, dir Direction, n int64) [32]byte {
	h := sha256.New()
	io.CopyN(h, propStream(f, dir), n)
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// propSend writes forward f's dir stream to w in random-size writes,
// limit bytes of it (all it can when limit < 0), and returns the bytes
// w took and its error.
func propSend(w io.Writer, f *propForward, dir Direction, rng *rand.Rand, limit int64) (int64, error) {
	src := propStream(f, dir)
	buf := make([]byte, 256<<10)
	var sent int64
	for limit < 0 || sent < limit {
		n := 1 + rng.IntN(len(buf))
		if limit >= 0 {
			n = int(min(int64(n), limit-sent))
		}
		src.Read(buf[:n])
		k, err := w.Write(buf[:n])
		sent += int64(k)
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// propReceive reads r to its end (or limit bytes, when limit ≥ 0) in
// random-size reads, pausing now and then when slow, counting into got;
// it returns the sha256 of what it read and the error that ended it
// (nil for EOF, or for the limit reached).
func propReceive(r io.Reader, rng *rand.Rand, got *atomic.Int64, limit int64, slow bool) ([32]byte, error) {
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var err error
	for limit < 0 || got.Load() < limit {
		n := len(buf)
		if slow {
			n = 1 + rng.IntN(32<<10)
		} else {
			n = 1 + rng.IntN(n)
		}
		if limit >= 0 {
			n = int(min(int64(n), limit-got.Load()))
		}
		var k int
		k, err = r.Read(buf[:n])
		h.Write(buf[:k])
		got.Add(int64(k))
		if err != nil {
			break
		}
		if slow && rng.IntN(8) == 0 {
			// The pod's behaviour, not synchronization: a pod that
			// takes its time, so its socket fills and empties.
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	var s [32]byte
	h.Sum(s[:0])
	return s, err
}

// propObserver counts the session's forwards and all the bytes it tells
// of; each forward's own counts come from its "forward done" line.
type propObserver struct {
	*countingObserver
	total byteObserver
}

func (o *propObserver) Transferred(d Direction, n int) { o.total.Transferred(d, n) }

// forwardLog keeps the result of each forward by request id, from the
// session's "forward done" lines.
type forwardLog struct {
	mu   sync.Mutex
	done map[string]PumpResult
}

func (h *forwardLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *forwardLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *forwardLog) WithGroup(string) slog.Handler            { return h }
func (h *forwardLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "forward done" {
		return nil
	}
	var req string
	var res PumpResult
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "request":
			req = a.Value.String()
		case "result":
			res.Result = a.Value.String()
		case "up":
			res.Up = a.Value.Int64()
		case "down":
			res.Down = a.Value.Int64()
		}
		return true
	})
	h.mu.Lock()
	h.done[req] = res
	h.mu.Unlock()
	return nil
}

func (h *forwardLog) get(req string) (PumpResult, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	res, ok := h.done[req]
	return res, ok
}

// pollUntil polls cond until it holds or d has passed; it reports
// whether it held.
func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

func propOpenFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestSPDYForwardsKeepOrderAndCounts: a dozen forwards at once on one
// SPDY connection from client-go's client, each to its own loopback pod,
// each drawing a behaviour from a seed: bulk uploads to fast and to slow
// pods (the reader's writes straight to the pod and the stream's buffer
// taking turns), downloads, both ways at once, a pod that resets part-way
// through an upload, a client that resets its data stream part-way, a
// client that half-closes early. Every forward that ends ok delivers
// every byte in order both ways; a reset one delivers a prefix of what
// was sent; for every forward, its Pump's counts each way (its "forward
// done" line) are what the pod received and what the client received
// (bounded by them where kernel buffers a reset discarded make that
// unknowable), and the observer (bytes_total) is told of the forwards'
// counts in all, exactly. The session then ends cleanly, and leaves no
// goroutine and no file descriptor behind.
func TestSPDYForwardsKeepOrderAndCounts(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { testSPDYForwardsProperty(t, seed) })
	}
}

func testSPDYForwardsProperty(t *testing.T, seed uint64) {
	t.Logf("seed %d", seed)
	goroutines, fds := runtime.NumGoroutine(), propOpenFDs(t)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	const forwards = 12
	// Every behaviour at least once, the rest at random.
	var plan []propBehaviour
	for b := range propBehaviours {
		plan = append(plan, b)
	}
	for len(plan) < forwards {
		plan = append(plan, propBehaviour(rng.IntN(int(propBehaviours))))
	}
	rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })

	mib := func(lo, hi int64) int64 { return lo<<20 + rng.Int64N((hi-lo)<<20+1) }
	obs := &propObserver{countingObserver: newCountingObserver()}
	all := make([]*propForward, forwards)
	for i, b := range plan {
		f := &propForward{i: i, b: b, seed: seed, podDone: make(chan struct{}), clientDone: make(chan struct{})}
		switch b {
		case propUpload:
			f.up = mib(1, 8)
		case propSlowUpload:
			f.up = mib(1, 4)
		case propDownload:
			f.down = mib(1, 8)
		case propBothWays:
			f.up, f.down = mib(1, 8), mib(1, 8)
		case propPodReset:
			f.up = mib(1, 8)
			f.resetAt = rng.Int64N(f.up)
		case propClientReset:
			// Part-way through an upload, a download (the pod sending
			// until it cannot), or both.
			switch rng.IntN(3) {
			case 0:
				f.up = mib(1, 8)
			case 1:
				f.down = -1
			case 2:
				f.up, f.down = mib(1, 8), -1
			}
			if f.up > 0 {
				f.resetAt = 1 + rng.Int64N(f.up-1)
			}
		case propEarlyHalfClose:
			f.up, f.down = rng.Int64N(64<<10), mib(1, 8)
		}
		var lc net.ListenConfig
		if b == propSlowUpload {
			// A small receive buffer: the pod's socket fills often.
			lc.Control = func(_, _ string, rc syscall.RawConn) error {
				rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
				return nil
			}
		}
		ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f.ln, f.port = ln, uint16(ln.Addr().(*net.TCPAddr).Port)
		all[i] = f
		t.Logf("forward %d: %v, up %d, down %d, reset at %d", i, b, f.up, f.down, f.resetAt)
	}

	log := &forwardLog{done: map[string]PumpResult{}}
	r := newSessionRigWith(t, Config{Observer: obs, Log: slog.New(log)}, SPDYOptions{})
	for _, f := range all {
		go propPod(f, rand.New(rand.NewPCG(seed, uint64(2*f.i))))
	}
	errStreams := make([]httpstream.Stream, forwards)
	for _, f := range all {
		var data httpstream.Stream
		data, errStreams[f.i] = r.openPair(t, f.port, strconv.Itoa(f.i))
		go propClient(f, data, rand.New(rand.NewPCG(seed, uint64(2*f.i+1))))
	}
	for _, f := range all {
		for _, done := range []chan struct{}{f.clientDone, f.podDone} {
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("forward %d (%v): its client or pod still runs after 20 s", f.i, f.b)
			}
		}
		if msg := readErrorStream(t, errStreams[f.i]); msg != "" {
			t.Errorf("forward %d (%v): error stream %q, want nothing", f.i, f.b, msg)
		}
	}
	// Each forward's Pump has returned (and told the observer all it
	// moved) once its line is logged.
	if !pollUntil(10*time.Second, func() bool {
		return obs.get(func(o *countingObserver) int {
			return o.ended[ResultOK] + o.ended[ResultReset] + o.ended[ResultAborted]
		}) == forwards
	}) {
		t.Fatalf("forwards ended: %d, want %d", obs.get(func(o *countingObserver) int { return len(o.ended) }), forwards)
	}

	var sumUp, sumDown int64
	for _, f := range all {
		res, ok := log.get(strconv.Itoa(f.i))
		if !ok {
			t.Errorf("forward %d (%v): no \"forward done\" line", f.i, f.b)
			continue
		}
		sumUp, sumDown = sumUp+res.Up, sumDown+res.Down
		checkPropForward(t, f, res)
	}
	// The observer (bytes_total) was told of exactly what the pumps
	// counted.
	if u, d := obs.total.get(ClientToPod), obs.total.get(PodToClient); u != sumUp || d != sumDown {
		t.Errorf("observer: %d up and %d down in all, the forwards' pumps %d and %d", u, d, sumUp, sumDown)
	}
	started := obs.get(func(o *countingObserver) int { return o.started })
	rejected := obs.get(func(o *countingObserver) int { return len(o.rejected) })
	if started != forwards || rejected != 0 {
		t.Errorf("observer: %d forwards started, streams rejected for %d reasons; want %d, none", started, rejected, forwards)
	}

	// The session ends cleanly: drained with nothing active, Run returns.
	r.session.Drain()
	r.waitRun(t)
	r.client.Close()
	r.raw.Close()
	for _, f := range all {
		f.ln.Close()
	}
	if !pollUntil(5*time.Second, func() bool { return runtime.NumGoroutine() <= goroutines }) {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d, %d before the test\n%s", runtime.NumGoroutine(), goroutines, buf[:runtime.Stack(buf, true)])
	}
	// Idle splice pipes are closed after a second at most.
	if !pollUntil(5*time.Second, func() bool { return propOpenFDs(t) <= fds }) {
		t.Errorf("open fds: %d, %d before the test", propOpenFDs(t), fds)
	}
}

// propPod serves forward f's one connection as its behaviour says.
func propPod(f *propForward, rng *rand.Rand) {
	defer close(f.podDone)
	c, err := f.ln.Accept()
	if err != nil {
		f.podReadErr = err
		return
	}
	pod := c.(*net.TCPConn)
	defer pod.Close()
	pod.SetDeadline(time.Now().Add(20 * time.Second))
	wrng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())) // the writes' own, for the writer's goroutine
	recv := func(limit int64, slow bool) { f.podSum, f.podReadErr = propReceive(pod, rng, &f.podGot, limit, slow) }
	send := func() {
		if f.down != 0 {
			f.podSent, f.podWriteErr = propSend(pod, f, PodToClient, wrng, f.down)
		}
		if f.podWriteErr == nil && f.down >= 0 {
			pod.CloseWrite()
		}
	}
	switch f.b {
	case propPodReset:
		recv(f.resetAt, false)
		pod.SetLinger(0)
	case propEarlyHalfClose:
		recv(-1, false)
		send()
	default: // both ways at once, whichever carry bytes
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			send()
		}()
		recv(-1, f.b == propSlowUpload)
		<-wrote
	}
}

// propClient drives forward f's data stream as its behaviour says.
func propClient(f *propForward, data httpstream.Stream, rng *rand.Rand) {
	defer close(f.clientDone)
	read := make(chan struct{})
	wrng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
	go func() {
		defer close(read)
		f.clientSum, f.clientErr = propReceive(data, rng, &f.clientGot, -1, false)
	}()
	switch f.b {
	case propClientReset:
		f.clientSent, _ = propSend(data, f, ClientToPod, wrng, f.resetAt)
		// Part-way both ways: the pump runs and has moved bytes each
		// way before the reset.
		pollUntil(10*time.Second, func() bool {
			return (f.up == 0 || f.podGot.Load() > 0) && (f.down == 0 || f.clientGot.Load() > 0)
		})
		data.Reset()
		<-read
		return
	default:
		var err error
		f.clientSent, err = propSend(data, f, ClientToPod, wrng, f.up)
		if err != nil {
			f.clientErr = err
		}
		data.Close()
	}
	<-read
	data.Reset() // as client-go does
}

// checkPropForward asserts forward f's properties, given its Pump's
// result.
func checkPropForward(t *testing.T, f *propForward, res PumpResult) {
	t.Helper()
	pumpUp, pumpDown := res.Up, res.Down // what the observer's total matches
	clientGot := f.clientGot.Load()
	podGot := f.podGot.Load()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("forward %d (%v, up %d, down %d, reset at %d): %s; pump %+v, pump up %d down %d, client sent %d got %d (%v), pod sent %d (%v) got %d (%v)",
			f.i, f.b, f.up, f.down, f.resetAt, fmt.Sprintf(format, args...), res, pumpUp, pumpDown,
			f.clientSent, clientGot, f.clientErr, f.podSent, f.podWriteErr, podGot, f.podReadErr)
	}
	// What each side received is, in order, what the other sent, or a
	// prefix of it.
	if f.podSum != propPrefixSum(f, ClientToPod, podGot) {
		fail("the pod's bytes are not the client's in order")
	}
	if f.clientSum != propPrefixSum(f, PodToClient, clientGot) {
		fail("the client's bytes are not the pod's in order")
	}
	switch f.b {
	case propPodReset:
		if res.Result != ResultReset {
			fail("result %q, want %q", res.Result, ResultReset)
		}
		if podGot != f.resetAt || f.clientSent != f.up {
			fail("the pod read %d, the client sent %d; want %d and %d", podGot, f.clientSent, f.resetAt, f.up)
		}
		// Not exact: what the pump wrote to the pod's socket that the
		// pod had not read when it reset was counted (the pod's kernel
		// took it) and discarded by the reset.
		if pumpUp < podGot || pumpUp > f.clientSent {
			fail("pump up %d, want from what the pod read to what the client sent", pumpUp)
		}
		if pumpDown != 0 || clientGot != 0 {
			fail("bytes down with a pod that sent none")
		}
	case propClientReset:
		if res.Result != ResultReset {
			fail("result %q, want %q", res.Result, ResultReset)
		}
		if (f.up > 0 && podGot == 0) || (f.down != 0 && clientGot == 0) || (f.down == 0 && clientGot != 0) {
			fail("the reset came before bytes moved each way planned, or bytes came from a pod that sent none")
		}
		// Exact when the pod read to an orderly end. When the forward
		// reset the pod's connection instead (its socket held bytes of
		// the pod's not yet read, or unsent ones, SO_LINGER 0), what the
		// pod's kernel had not taken or the pod had not read was lost:
		// a bound. A pod that writes too cannot tell the two ends
		// apart: its writes, failing on the reset, take the socket's
		// ECONNRESET, and its read then sees an end of file.
		if f.down == 0 && f.podReadErr == nil && pumpUp != podGot {
			fail("pump up %d, the pod read %d to its end", pumpUp, podGot)
		}
		if pumpUp < podGot || pumpUp > f.clientSent {
			fail("pump up %d, want from what the pod read to what the client sent", pumpUp)
		}
		// The client stops reading at its reset: what was in flight to
		// it (frames on the connection, in its kernel's buffers) was
		// counted but never read. A bound.
		if pumpDown < clientGot || pumpDown > f.podSent {
			fail("pump down %d, want from what the client read to what the pod sent", pumpDown)
		}
	default:
		if res.Result != ResultOK {
			fail("result %q, want %q", res.Result, ResultOK)
		}
		if f.clientErr != nil || f.podReadErr != nil || f.podWriteErr != nil {
			fail("errors")
		}
		if f.clientSent != f.up || podGot != f.up || f.podSent != max(f.down, 0) || clientGot != max(f.down, 0) {
			fail("bytes lost")
		}
		if pumpUp != podGot || pumpDown != clientGot {
			fail("pump up %d down %d, the pod read %d and the client %d", pumpUp, pumpDown, podGot, clientGot)
		}
	}
}
