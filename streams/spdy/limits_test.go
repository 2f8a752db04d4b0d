package spdy

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	spdyframe "github.com/moby/spdystream/spdy"
)

// limitLog records OnLimit calls.
type limitLog struct {
	mu   sync.Mutex
	hits []string
}

func (l *limitLog) add(s string) { l.mu.Lock(); l.hits = append(l.hits, s); l.mu.Unlock() }

func (l *limitLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hits)
}

func (l *limitLog) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.hits, s)
}

// waitFor polls cond until it holds (the engine's own goroutines reach
// the state in their time), failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestGlobalBudgetBoundsAllConnections: two connections flooding streams
// nobody reads hold at most the shared budget (plus one frame each), and
// a read on one lets the other go on.
func TestGlobalBudgetBoundsAllConnections(t *testing.T) {
	const global = 256 << 10
	budget := NewBudget(global)
	var limits limitLog
	opts := Options{StreamBuffer: 1 << 20, ConnBuffer: 1 << 20, StallTimeout: time.Hour, Global: budget, OnLimit: limits.add}
	var servers []*Stream
	for _, name := range []string{"a", "b"} {
		client, _, accepted := pair(t, opts)
		cs, ss := open(t, client, accepted, name)
		servers = append(servers, ss)
		go func() {
			chunk := make([]byte, 32<<10)
			for {
				if _, err := cs.Write(chunk); err != nil {
					return
				}
			}
		}()
	}
	waitFor(t, "the shared budget to fill", func() bool { return budget.Used() >= global })
	waitFor(t, "a global_buffer limit hit", func() bool { return limits.has(LimitGlobalBuffer) })
	if used := budget.Used(); used > global+2*32<<10 {
		t.Fatalf("%d bytes held, want at most the %d budget plus one frame per connection", used, global)
	}
	held := servers[1].in.Buffered()
	// Reading a's stream frees budget; b's reader, paused, takes some.
	buf := make([]byte, 128<<10)
	if _, err := io.ReadFull(servers[0], buf); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other connection to resume", func() bool { return servers[1].in.Buffered() > held || servers[0].in.Buffered() > 0 })
	if used := budget.Used(); used > global+2*32<<10 {
		t.Fatalf("after a read: %d bytes held", used)
	}
}

func TestMaxStreamsRefusesAndReports(t *testing.T) {
	var limits limitLog
	client, _, accepted := pair(t, Options{MaxStreams: 2, OnLimit: limits.add})
	open(t, client, accepted, "one")
	open(t, client, accepted, "two")
	cs, err := client.CreateStream(http.Header{"Name": {"three"}}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.WaitTimeout(10 * time.Second); err == nil {
		t.Fatal("third stream got a SYN_REPLY past MaxStreams 2")
	}
	if !limits.has(LimitStreams) {
		t.Errorf("limits reported %v, want %s", limits.snapshot(), LimitStreams)
	}
}

// TestPingFloodWithoutReadingIsBounded: a peer that sends pings and never
// reads the answers loses its connection once the answers waiting for it
// pass maxQueuedControl, instead of growing the queue forever.
func TestPingFloodWithoutReadingIsBounded(t *testing.T) {
	var limits limitLog
	f, _, srv := rawClient(t, Options{OnLimit: limits.add})
	var err error
	for i := uint32(1); err == nil; i += 2 {
		err = f.WriteFrame(&spdyframe.PingFrame{Id: i})
		if i > 4*maxQueuedControl/12 {
			t.Fatal("the connection took four times its control queue in pings without closing")
		}
	}
	select {
	case <-srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed")
	}
	if !limits.has(LimitControlQueue) {
		t.Errorf("limits reported %v, want %s", limits.snapshot(), LimitControlQueue)
	}
}

// TestStaleStreamOfAnotherConnectionFreesTheSharedBudget: connection a
// fills the shared budget with a stream nobody reads, then its client
// goes quiet, so a's reader never waits and never resets it. Connection
// b's reader then waits for the budget holding nothing of its own; after
// StallTimeout a's stale stream must be reset (FLOW_CONTROL_ERROR) and b
// go on. With the bug b waited for as long as a's stream stayed open:
// one pod that stops reading froze every connection sharing the budget.
func TestStaleStreamOfAnotherConnectionFreesTheSharedBudget(t *testing.T) {
	const global = 128 << 10
	budget := NewBudget(global)
	var limitsA, limitsB limitLog
	optsA := Options{StreamBuffer: global, ConnBuffer: global, StallTimeout: 500 * time.Millisecond, Global: budget, OnLimit: limitsA.add}
	clientA, _, acceptedA := pair(t, optsA)
	aC, aS := open(t, clientA, acceptedA, "a")
	if _, err := aC.Write(make([]byte, global)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the shared budget to fill", func() bool { return budget.Exhausted() })

	optsB := optsA
	optsB.OnLimit = limitsB.add
	clientB, _, acceptedB := pair(t, optsB)
	bC, bS := open(t, clientB, acceptedB, "b")
	if _, err := bC.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { _, err := io.ReadFull(bS, make([]byte, 1)); got <- err }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("b's byte not delivered 10s after a's stream went stale (budget %d of %d used, a holds %d); limits a %v, b %v",
			budget.Used(), global, aS.in.Buffered(), limitsA.snapshot(), limitsB.snapshot())
	}
	if _, err := aS.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
		t.Fatalf("read on a's stale stream: %v, want ErrReset", err)
	}
	if !limitsB.has(LimitGlobalBuffer) || !limitsA.has(LimitStreamBuffer) {
		t.Errorf("limits a %v, b %v; want %s on b and %s on a", limitsA.snapshot(), limitsB.snapshot(), LimitGlobalBuffer, LimitStreamBuffer)
	}
}

// TestStaleStreamIsReclaimedOnce: two readers waiting for the shared
// budget may both find the same stale stream (each calls FullestStale
// before either resets it), and a stream found stale may be reset by its
// peer before the reset runs. The stream must be reset, and
// LimitStreamBuffer counted, once: only a reset that ends the stream
// reports true and counts. With the bug every reset found the stream
// still stale (a reset does not touch lastUse) and counted the limit
// again, so portforwardd_limit_hits_total{limit="stream_buffer"} counted
// one stale stream as two or three.
func TestStaleStreamIsReclaimedOnce(t *testing.T) {
	const stall = 50 * time.Millisecond
	for _, peerReset := range []bool{false, true} {
		budget := NewBudget(1 << 20)
		var limits limitLog
		client, srv, accepted := pair(t, Options{StallTimeout: stall, Global: budget, OnLimit: limits.add})
		cs, ss := open(t, client, accepted, "stale")
		if _, err := cs.Write(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		var reset1, reset2 func() bool
		waitFor(t, "the stream to go stale", func() bool {
			_, reset1 = srv.FullestStale()
			return reset1 != nil
		})
		_, reset2 = srv.FullestStale()
		if reset2 == nil {
			t.Fatal("the stale stream not found stale a second time")
		}
		want := 1
		if peerReset {
			if err := cs.Reset(); err != nil {
				t.Fatal(err)
			}
			<-ss.Aborted()
			want = 0
		} else if !reset1() {
			t.Fatal("the first reset of the stale stream reported false")
		}
		if reset2() {
			t.Errorf("peer reset %v: a reset of a stream already ended reported true", peerReset)
		}
		got := limits.snapshot()
		if n := len(got); n != want {
			t.Errorf("peer reset %v: limits %v, want %d %s", peerReset, got, want, LimitStreamBuffer)
		}
		if peerReset {
			// The reader aborts the stream at the peer's RST_STREAM and
			// gives its bytes back to the budget just after: Aborted
			// may be seen first.
			waitFor(t, "the peer-reset stream's bytes to leave the budget", func() bool { return budget.Used() == 0 })
		} else if u := budget.Used(); u != 0 {
			t.Errorf("peer reset %v: budget holds %d after the reset, want 0", peerReset, u)
		}
	}
}

// TestProbedProgressIsNotAStall: a stream whose consumer reads nothing,
// its write to the pod waiting, while its probe says that write
// progresses (a pod reading slowly, its TCP acknowledging bytes), is not
// reset, whether the reader waits on the stream's full buffer, on the
// connection's, or for the shared budget (FullestStale); once the probe
// says nothing moves, it is reset as stalled. Only a read counted: a pod
// reading slower than its socket wakes the writer (the kernel does so
// once a third of the send buffer is free) had its stream reset as if it
// read nothing.
func TestProbedProgressIsNotAStall(t *testing.T) {
	const (
		buf   = 64 << 10
		stall = 100 * time.Millisecond
	)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"stream buffer", Options{StreamBuffer: buf, ConnBuffer: 16 * buf}},
		{"connection buffer", Options{StreamBuffer: buf, ConnBuffer: buf}},
		{"shared budget", Options{StreamBuffer: buf, ConnBuffer: 16 * buf, Global: NewBudget(buf)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var limits limitLog
			opts := tc.opts
			opts.StallTimeout, opts.OnLimit = stall, limits.add
			client, srv, accepted := pair(t, opts)
			cs, ss := open(t, client, accepted, "slow")
			var progressing atomic.Bool
			var asked atomic.Int32
			progressing.Store(true)
			ss.SetProgressProbe(func() bool { asked.Add(1); return progressing.Load() })
			go func() { // more than any of the budgets: the reader waits
				chunk := make([]byte, 16<<10)
				for range 4 * buf / len(chunk) {
					if _, err := cs.Write(chunk); err != nil {
						return
					}
				}
			}()
			waitFor(t, "the stream to fill its buffer", func() bool { return ss.in.Buffered() >= buf })
			reclaim := func() {
				if _, reset := srv.FullestStale(); reset != nil {
					reset()
				}
			}
			waitFor(t, "the stall checks to ask the probe", func() bool {
				if opts.Global != nil {
					reclaim() // another holder waiting for the shared budget
				}
				return asked.Load() >= 5
			})
			select {
			case <-ss.Aborted():
				t.Fatalf("the stream was reset (%v) while its probe said its pod takes bytes; limits %v", ss.AbortErr(), limits.snapshot())
			default:
			}
			if limits.has(LimitStreamBuffer) {
				t.Fatalf("limits %v while the pod takes bytes", limits.snapshot())
			}

			progressing.Store(false) // the pod stops reading
			waitFor(t, "the stalled stream to be reset", func() bool {
				if opts.Global != nil {
					reclaim()
				}
				select {
				case <-ss.Aborted():
					return true
				default:
					return false
				}
			})
			// The limit is told after the reset, which the test may see
			// first.
			waitFor(t, "the reset told as "+LimitStreamBuffer, func() bool { return limits.has(LimitStreamBuffer) })
		})
	}
}

// TestReadsWhileTheConnectionBudgetStaysSpentAreNotAStall: a reader
// waiting for the connection's budget, which the consumer of one stream
// frees a little at a time (its reads each leave the streams over
// ConnBuffer, which a put overshot), resets no stream while the reads go
// on: each read restarts the stall time, as the package doc says ("if
// the consumer reads nothing for Options.StallTimeout"). Kills the wait
// ignoring the reads, which reset the fullest stream StallTimeout after
// the wait began.
func TestReadsWhileTheConnectionBudgetStaysSpentAreNotAStall(t *testing.T) {
	const stall = time.Second
	limits := &limitLog{}
	client, srv, accepted := pair(t, Options{StreamBuffer: 64 << 10, ConnBuffer: 128 << 10, StallTimeout: stall, OnLimit: limits.add})
	aC, a := open(t, client, accepted, "a")
	bC, b := open(t, client, accepted, "b")
	cC, c := open(t, client, accepted, "c")
	dC, d := open(t, client, accepted, "d")
	aC.Write(make([]byte, 64<<10))
	bC.Write(make([]byte, 64<<10))
	waitFor(t, "the connection budget to fill", func() bool { return srv.buffered.Load() >= 128<<10 })
	cC.Write(make([]byte, 64<<10))
	waitFor(t, "the reader to wait for the connection budget", func() bool { return limits.has(LimitSessionBuffer) })
	// a's consumer reads 1 KiB every 50 ms: its first read lets c's 64 KiB
	// in, one put, which leaves the streams 63 KiB over the budget, and d's
	// byte waits while a's reads free it a KiB at a time.
	stop := make(chan struct{})
	var read atomic.Int64
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		buf := make([]byte, 1<<10)
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			n, err := io.ReadFull(a, buf)
			read.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	defer close(stop)
	waitFor(t, "c's bytes to be put in", func() bool { return c.in.Buffered() == 64<<10 })
	dC.Write([]byte("x"))
	// Over two and a half stall times of reads (50 KiB) no stream is reset.
	waitFor(t, "a's consumer to read 50 KiB", func() bool {
		for _, s := range []*Stream{a, b, c, d} {
			if err := s.AbortErr(); err != nil {
				t.Fatalf("stream %d reset after %d bytes read from a, read every 50 ms: %v; limits %v", s.ID(), read.Load(), err, limits.snapshot())
			}
		}
		return read.Load() >= 50<<10
	})
	if limits.has(LimitStreamBuffer) {
		t.Fatalf("limits %v: a stream was reset while a's consumer read", limits.snapshot())
	}
}
