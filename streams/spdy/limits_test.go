package spdy

import (
	"io"
	"net/http"
	"slices"
	"sync"
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
		t.Errorf("limits reported %v, want %s", limits.hits, LimitStreams)
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
		t.Errorf("limits reported %v, want %s", limits.hits, LimitControlQueue)
	}
}
