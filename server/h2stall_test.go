package server

import (
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
