package streams

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/portforwardd/portforwardd/streams/internal/pipe"
)

// TestStaleV4PortIsReclaimedOnce: readers of several sessions waiting
// for the shared budget may all find the same stale v4 port and reset it
// at once. The port must be reset, and LimitStreamBuffer counted, once.
// With the bug each reset looked at the port (stale, bytes queued) before
// any of them aborted it, and each counted the limit.
func TestStaleV4PortIsReclaimedOnce(t *testing.T) {
	const readers = 8
	for round := range 200 {
		budget := NewBudget(1 << 20)
		var limits limitLog
		s := &chanSession{cfg: ChannelConfig{Global: budget, StallTimeout: time.Millisecond, OnLimit: limits.add}}
		p := &chanPort{s: s, port: 80, in: pipe.New(channelInbox)}
		p.ctx, p.cancel = context.WithCancelCause(context.Background())
		p.in.OnPut = func(n int) { budget.Add(int64(n)) }
		p.in.OnRead = func(n int) { budget.Add(-int64(n)) }
		s.ports = []*chanPort{p}
		if err := p.in.Put(make([]byte, 1000), 0); err != nil {
			t.Fatal(err)
		}
		p.lastUse.Store(int64(time.Since(clockStart) - time.Hour))
		var resets []func() bool
		for range readers {
			_, reset := s.FullestStale()
			if reset == nil {
				t.Fatal("the stale port not found stale")
			}
			resets = append(resets, reset)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		did := 0
		for _, reset := range resets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if reset() {
					mu.Lock()
					did++
					mu.Unlock()
				}
			}()
		}
		close(start)
		wg.Wait()
		limits.mu.Lock()
		hits := len(limits.hits)
		limits.mu.Unlock()
		if did != 1 || hits != 1 {
			t.Fatalf("round %d: %d resets reported true and %d limits counted for one stale port, want 1 and 1", round, did, hits)
		}
		if u := budget.Used(); u != 0 {
			t.Fatalf("round %d: budget holds %d after the reset, want 0", round, u)
		}
	}
}
