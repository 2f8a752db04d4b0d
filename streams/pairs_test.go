package streams

import (
	"context"
	"sync/atomic"
	"testing"
)

// TestSessionDialsTheDataStreamsPort: a pair whose error stream names
// another port than its data stream forwards to the data stream's, as the
// kubelet does. Kills the pair keeping the port of its first stream.
func TestSessionDialsTheDataStreamsPort(t *testing.T) {
	port := echoPod(t)
	var dialed atomic.Int32
	r := newSessionRig(t, Config{Dial: func(ctx context.Context, p uint16) (PodConn, error) {
		dialed.Store(int32(p))
		return loopbackDial(ctx, p)
	}})
	errs, err := r.client.CreateStream(streamHeaders(StreamTypeError, port+1, "1"))
	if err != nil {
		t.Fatal(err)
	}
	errs.Close()
	data, err := r.client.CreateStream(streamHeaders(StreamTypeData, port, "1"))
	if err != nil {
		t.Fatal(err)
	}
	echoThrough(t, data, "to the data stream's port")
	if msg := readErrorStream(t, errs); msg != "" {
		t.Fatalf("error stream: %q", msg)
	}
	if p := uint16(dialed.Load()); p != port {
		t.Fatalf("dialed port %d, want the data stream's %d", p, port)
	}
}

// TestSessionMaxPendingPairsIsTheLimit: with MaxPendingPairs 2, two
// incomplete pairs wait and the stream of a third is refused, told as
// LimitPendingStreams; once a pair completes, a new one is taken again.
// Kills a limit off by one.
func TestSessionMaxPendingPairsIsTheLimit(t *testing.T) {
	var limits limitLog
	port := echoPod(t)
	r := newSessionRig(t, Config{MaxPendingPairs: 2, OnLimit: limits.add})
	for _, id := range []string{"1", "2"} {
		errs, err := r.client.CreateStream(streamHeaders(StreamTypeError, port, id))
		if err != nil {
			t.Fatalf("error stream of pending pair %s: %v", id, err)
		}
		errs.Close()
	}
	if _, err := r.client.CreateStream(streamHeaders(StreamTypeError, port, "3")); err == nil {
		t.Fatal("a third pending pair was taken with MaxPendingPairs 2")
	}
	if !limits.has(LimitPendingStreams) {
		t.Fatalf("limits %v, want %s", &limits, LimitPendingStreams)
	}
	data, err := r.client.CreateStream(streamHeaders(StreamTypeData, port, "1"))
	if err != nil {
		t.Fatal(err)
	}
	echoThrough(t, data, "pair 1 complete")
	d4, e4 := r.openPair(t, port, "4")
	echoThrough(t, d4, "a pair taken again")
	readErrorStream(t, e4)
}
