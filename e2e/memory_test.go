package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestMemoryReturnedWhileASessionStays: memory that finished sessions
// used goes back to the kernel within seconds even though another session
// (an idle port-forward someone left open) keeps the daemon busy. Without
// that, a node keeps the peak of its busiest minute for as long as any
// port-forward is open.
func TestMemoryReturnedWhileASessionStays(t *testing.T) {
	d := startDaemon(t)
	ep := newEchoPod(t)

	idle := startForward(t, d, transports[0], ep.route(), ep.port)
	if err := echoRandom(idle.local, 1<<10); err != nil {
		t.Fatalf("idle session's echo: %v", err)
	}
	rss0, heap0 := d.rssMiB(t), d.heapRetainedMiB(t)

	// Many sessions at once grow the heap by tens of MiB.
	const n = 400
	fs := openSessions(t, d, ep, n, 64<<10)
	rss1, heap1 := d.rssMiB(t), d.heapRetainedMiB(t)
	if heap1-heap0 < 16 {
		t.Fatalf("heap %d → %d MiB with %d sessions open: too little growth for this test to tell anything", heap0, heap1, n)
	}

	for _, f := range fs {
		f.close()
	}
	ended := time.Now()
	eventually(t, 30*time.Second, func() (bool, string) {
		s := d.metricSum(t, "portforwardd_sessions_active")
		return s == 1, fmt.Sprintf("sessions_active %v, want the idle one", s)
	})
	// Back to within a third of the growth, while the idle session
	// stays: the heap the runtime keeps in memory, and the RSS (but for
	// the race detector's shadow memory, which it never gives back).
	heapLimit, rssLimit := heap0+(heap1-heap0)/3, rss0+(rss1-rss0)/3
	var heap, rss int
	eventually(t, 15*time.Second, func() (bool, string) {
		heap, rss = d.heapRetainedMiB(t), d.rssMiB(t)
		ok := heap <= heapLimit && (rss <= rssLimit || rssScale() > 1)
		return ok, fmt.Sprintf("heap %d MiB, RSS %d MiB; want ≤ %d and ≤ %d (one session: %d and %d MiB, %d more: %d and %d MiB)",
			heap, rss, heapLimit, rssLimit, heap0, rss0, n, heap1, rss1)
	})
	t.Logf("heap kept by the runtime and RSS: %d and %d MiB with one session, %d and %d MiB with %d more, %d and %d MiB %v after they ended",
		heap0, rss0, heap1, rss1, n, heap, rss, time.Since(ended).Round(100*time.Millisecond))
	if err := echoRandom(idle.local, 1<<10); err != nil {
		t.Fatalf("idle session's echo afterwards: %v", err)
	}
}

// heapRetainedMiB is the heap the Go runtime holds in physical memory:
// obtained from the kernel and not released back.
func (d *daemon) heapRetainedMiB(t *testing.T) int {
	t.Helper()
	return int(d.metric(t, "go_memstats_heap_sys_bytes")-d.metric(t, "go_memstats_heap_released_bytes")) >> 20
}
