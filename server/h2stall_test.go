package server

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// pipePod is one end of a net.Pipe as a pod connection: a pod that reads
// nothing, since nobody reads the other end.
type pipePod struct{ net.Conn }

func (pipePod) CloseWrite() error { return nil }

// TestH2NodeStallsResetAllBeyondTheBudget: when more HTTP/2 streams than
// --buffer-bytes holds stream windows have stalled for the stall timeout
// at once, every one beyond the budget is reset at that look, not one a
// second: a client opening stalled uploads faster than one a second held
// the daemon above --buffer-bytes for as long as it went on.
func TestH2NodeStallsResetAllBeyondTheBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const streamWindow = 1 << 20
		l := Limits{StreamBufferBytes: streamWindow, SessionBufferBytes: 2 * streamWindow, BufferBytes: 2 * streamWindow}
		node := newH2Stalls(l, false) // holds 2 stalled streams' windows
		const stalled = 6             // each on a connection of its own
		var resets atomic.Int32
		var wg sync.WaitGroup
		var peers []net.Conn
		for range stalled {
			pc, peer := net.Pipe()
			peers = append(peers, peer)
			c := &h2StallPod{PodConn: pipePod{pc}, stalls: [2]*h2Stalls{newH2Stalls(l, true), node}}
			var once sync.Once
			c.reset = func(by *h2Stalls) {
				once.Do(func() {
					if by != node {
						t.Errorf("reset by its connection's watch (limit %d), want the node's", by.limit)
					}
					resets.Add(1)
					pc.Close()
				})
			}
			wg.Go(func() { c.Write(make([]byte, 1024)) })
		}
		synctest.Wait() // every write waits on its pod
		// In the bubble, sleeping moves the fake clock on: nothing
		// waits for real time.
		time.Sleep(h2StallTimeout)
		synctest.Wait() // the look at h2StallTimeout is done
		if got, want := resets.Load(), int32(stalled-node.limit+1); got != want {
			t.Errorf("%d stalled streams, budget for %d: %d reset at the first look past the stall timeout, want %d",
				stalled, node.limit, got, want)
		}
		time.Sleep(time.Minute)
		if got, want := resets.Load(), int32(stalled-node.limit+1); got != want {
			t.Errorf("%d reset a minute on, want %d: the streams within the budget are kept", got, want)
		}
		node.mu.Lock()
		left := len(node.waiting)
		node.mu.Unlock()
		if left != node.limit-1 {
			t.Errorf("the node's watch has %d waiting writes, want %d", left, node.limit-1)
		}

		// The pods go away: the writes end, and with nothing waiting both
		// watches stop (synctest.Test fails on a goroutine left blocked).
		for _, peer := range peers {
			peer.Close()
		}
		wg.Wait()
		time.Sleep(time.Second)
	})
}

// stalledStream is a stream, on a connection of its own, whose write to a
// pod that reads nothing (until the test reads peer) is watched by its
// connection's h2Stalls and by node; its stall resets are counted, and
// told on resets by name.
type stalledStream struct {
	name  string
	peer  net.Conn // the pod's end
	reset atomic.Bool
}

func startStalledWrite(t *testing.T, wg *sync.WaitGroup, l Limits, node *h2Stalls, name string, size int, resets chan<- string) *stalledStream {
	pc, peer := net.Pipe()
	st := &stalledStream{name: name, peer: peer}
	c := &h2StallPod{PodConn: pipePod{pc}, stalls: [2]*h2Stalls{newH2Stalls(l, true), node}}
	var once sync.Once
	c.reset = func(by *h2Stalls) {
		once.Do(func() {
			if by != node {
				t.Errorf("%s reset by its connection's watch (limit %d), want the node's", name, by.limit)
			}
			st.reset.Store(true)
			resets <- name
			pc.Close()
		})
	}
	wg.Go(func() { c.Write(make([]byte, size)) })
	return st
}

// TestH2StallsResetTheLongestStalledFirst: of the stalled streams, the
// ones whose pods have taken nothing for longest are reset, as the
// README says: a stream that stalled a moment ago keeps its chance,
// where one stalled for a while has had it.
func TestH2StallsResetTheLongestStalledFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const streamWindow = 1 << 20
		l := Limits{StreamBufferBytes: streamWindow, SessionBufferBytes: 2 * streamWindow, BufferBytes: 2 * streamWindow}
		node := newH2Stalls(l, false) // holds 2 stalled streams' windows
		resets := make(chan string, 3)
		var wg sync.WaitGroup
		// a stalls at 0 s, b at 2 s, c at 4 s: at 12 s a and b have
		// stalled for the timeout (a for longer), at 14 s b and c.
		var all []*stalledStream
		for i, name := range []string{"a", "b", "c"} {
			if i > 0 {
				time.Sleep(2 * time.Second)
			}
			all = append(all, startStalledWrite(t, &wg, l, node, name, 1024, resets))
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		close(resets)
		var order []string
		for name := range resets {
			order = append(order, name)
		}
		if got, want := fmt.Sprint(order), "[a b]"; got != want {
			t.Errorf("streams reset, in order: %s; want %s (the longest stalled first, c kept within the budget)", got, want)
		}
		for _, st := range all {
			st.peer.Close()
		}
		wg.Wait()
		time.Sleep(time.Second) // the watch sees nothing waiting and stops
	})
}

// TestH2StallWatchRestartsAfterAQuietSpell: the watch stops when no write
// waits, and the next stalled write starts it again: stalls after a quiet
// spell are reset as the first ones were, not left to hold the budget for
// the daemon's lifetime.
func TestH2StallWatchRestartsAfterAQuietSpell(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const streamWindow = 1 << 20
		l := Limits{StreamBufferBytes: streamWindow, SessionBufferBytes: 2 * streamWindow, BufferBytes: 2 * streamWindow}
		node := newH2Stalls(l, false) // holds 2 stalled streams' windows
		for round := range 3 {
			resets := make(chan string, 2)
			var wg sync.WaitGroup
			a := startStalledWrite(t, &wg, l, node, "a", 1024, resets)
			b := startStalledWrite(t, &wg, l, node, "b", 1024, resets)
			time.Sleep(h2StallTimeout + time.Second)
			synctest.Wait()
			if n := len(resets); n != 1 {
				t.Fatalf("round %d: %d of 2 stalled streams reset %v past the stall timeout, want 1", round, n, h2StallTimeout+time.Second)
			}
			a.peer.Close()
			b.peer.Close()
			wg.Wait()
			time.Sleep(time.Minute) // nothing waits: the watch stops
			synctest.Wait()
			node.mu.Lock()
			ticking := node.ticking
			node.mu.Unlock()
			if ticking {
				t.Fatalf("round %d: the watch still runs with no write waiting", round)
			}
		}
	})
}

// TestH2StallsSeeProgressBetweenChunks: a write of more than a chunk to a
// pod that takes each chunk within the stall timeout, but the whole write
// in more than it, is progressing, not stalled: a pod that reads slowly
// but steadily keeps its stream, even without TCP_INFO to tell (a pipe
// here).
func TestH2StallsSeeProgressBetweenChunks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const streamWindow = 1 << 20
		l := Limits{StreamBufferBytes: streamWindow, SessionBufferBytes: streamWindow, BufferBytes: streamWindow}
		node := newH2Stalls(l, false) // a single stalled stream holds the budget
		resets := make(chan string, 1)
		var wg sync.WaitGroup
		const chunks = 4
		st := startStalledWrite(t, &wg, l, node, "slow", chunks*h2StallChunk, resets)
		pace := h2StallTimeout * 6 / 10 // a chunk every 6 s: the write takes 24 s
		buf := make([]byte, h2StallChunk)
		for i := range chunks {
			time.Sleep(pace)
			if _, err := io.ReadFull(st.peer, buf); err != nil {
				t.Fatalf("pod's read of chunk %d: %v (the stream reset: %v)", i, err, st.reset.Load())
			}
		}
		wg.Wait()
		if st.reset.Load() {
			t.Errorf("a pod taking a %d KiB chunk every %v was reset as stalled", h2StallChunk>>10, pace)
		}
		st.peer.Close()
		time.Sleep(time.Second) // the watch sees nothing waiting and stops
	})
}
