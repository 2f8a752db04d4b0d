package e2e

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A slow pod reads an upload at about 40 KiB/s (4 KiB every 100 ms) for
// slowFor, past StallTimeout (10 s, not a flag) twice, then as fast as
// it can. The client sends slowUpload bytes, more than the stream's buffer
// and both sockets' buffers hold, so for the whole slow phase the daemon's
// write to the pod waits on a full socket: the kernel wakes it only once
// a third of the send buffer is free, which at 40 KiB/s takes longer than
// StallTimeout.
const (
	slowFor    = 22 * time.Second
	slowUpload = 16 << 20
)

// slowPodResult is what a slow pod read: the bytes, their sha256, and
// what ended its reading.
type slowPodResult struct {
	n   int64
	sum [32]byte
	err error
}

// serveSlowReader reads the first connection ln accepts slowly for slowFor,
// then fast until want bytes came or the connection ended, and delivers
// what it read.
func serveSlowReader(t *testing.T, ln net.Listener, want int64) <-chan slowPodResult {
	done := make(chan slowPodResult, 1)
	accepted := acceptOne(t, ln)
	go func() {
		c := <-accepted
		h := sha256.New()
		var n int64
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		slowUntil := time.Now().Add(slowFor)
		buf := make([]byte, 4<<10)
		for time.Now().Before(slowUntil) {
			<-tick.C
			k, err := io.ReadFull(c, buf)
			h.Write(buf[:k])
			n += int64(k)
			if err != nil {
				done <- slowPodResult{n: n, err: fmt.Errorf("after %d bytes, in the slow phase: %w", n, err)}
				return
			}
		}
		k, err := io.Copy(h, io.LimitReader(c, want-n))
		n += k
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		done <- slowPodResult{n: n, sum: sum, err: err}
	}()
	return done
}

// startSlowPod starts a daemon with flags and a pod whose listener
// serves one slow reader of slowUpload bytes (serveSlowReader).
func startSlowPod(t *testing.T, flags []string) (*daemon, *pod, net.Listener, <-chan slowPodResult) {
	t.Helper()
	d := startDaemon(t, flags...)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	return d, p, ln, serveSlowReader(t, ln, slowUpload)
}

// expectSlowPodServed checks that the slow pod got every byte, in order,
// and that no stream was reset for a stall.
func expectSlowPodServed(t *testing.T, d *daemon, protocol string, got slowPodResult, want [32]byte) {
	t.Helper()
	hits := d.metric(t, `portforwardd_limit_hits_total{limit="stream_buffer"}`)
	resets := d.metric(t, `portforwardd_streams_total{protocol="`+protocol+`",result="reset"}`)
	if got.err != nil || got.n != slowUpload {
		t.Fatalf("the slow pod read %d of %d bytes: %v (limit_hits_total{stream_buffer} %v, streams_total{%s,reset} %v)",
			got.n, slowUpload, got.err, hits, protocol, resets)
	}
	if got.sum != want {
		t.Fatalf("the slow pod read %d bytes, not those sent, or not in order", got.n)
	}
	if hits != 0 {
		t.Errorf("limit_hits_total{stream_buffer} %v, want 0: a pod reading slowly is not stalled", hits)
	}
	if resets != 0 {
		t.Errorf("streams_total{%s,reset} %v, want 0", protocol, resets)
	}
}

// TestSPDYSlowlyReadingPodIsNotReset: a pod that reads an upload slowly but
// steadily (40 KiB/s) through client-go's SPDY keeps its stream and gets
// every byte, whether the reader waits on the stream's full buffer or, with
// the connection's and the daemon's budgets as small as the stream's, on
// those. The daemon's write to the pod did not return for longer than
// StallTimeout, and only a return counted as the pod reading: the stream
// was reset (FLOW_CONTROL_ERROR, stream_buffer) as if its pod read nothing.
func TestSPDYSlowlyReadingPodIsNotReset(t *testing.T) {
	t.Parallel() // most of its time is the pod's slow reading
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"stream buffer", []string{"--stream-buffer-bytes", "256Ki"}},
		{"all budgets", []string{"--stream-buffer-bytes", "256Ki", "--session-buffer-bytes", "256Ki", "--buffer-bytes", "256Ki"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, p, ln, podDone := startSlowPod(t, tc.flags)

			conn := dialSPDY(t, d, p.route())
			errs, err := conn.CreateStream(streamHeaders("error", strconv.Itoa(port(ln)), "1"))
			if err != nil {
				t.Fatal(err)
			}
			errs.Close()
			data, err := conn.CreateStream(streamHeaders("data", strconv.Itoa(port(ln)), "1"))
			if err != nil {
				t.Fatal(err)
			}
			src, want := randomStream(slowUpload)
			sent := make(chan error, 1)
			go func() {
				_, err := io.Copy(data, src)
				if err == nil {
					err = data.Close() // half-close: the pod reads EOF after the bytes
				}
				sent <- err
			}()
			got := <-podDone
			if err := <-sent; err != nil {
				t.Errorf("client upload: %v", err)
			}
			expectSlowPodServed(t, d, "spdy", got, want())
		})
	}
}

// TestWebSocketV4SlowlyReadingPodIsNotReset: the same through a v4
// WebSocket port, whether the reader waits on the port's full queue or,
// with --buffer-bytes below that queue, on the budget shared by all
// sessions (whose reclaim resets the stalest port). A write to the pod
// that did not return for StallTimeout left the port looking stale, and
// it was reset although its pod was reading.
func TestWebSocketV4SlowlyReadingPodIsNotReset(t *testing.T) {
	t.Parallel() // most of its time is the pod's slow reading
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"port queue", nil},
		{"shared budget", []string{"--stream-buffer-bytes", "128Ki", "--session-buffer-bytes", "128Ki", "--buffer-bytes", "128Ki"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, p, ln, podDone := startSlowPod(t, tc.flags)

			c, _, err := dialV4(t, d, p.route(), []int{port(ln)}, "v4.channel.k8s.io")
			if err != nil {
				t.Fatal(err)
			}
			c.expectPrefixes(port(ln))
			src, want := randomStream(slowUpload)
			sent := make(chan error, 1)
			go func() {
				msg := make([]byte, 1+32<<10) // channel 0, then data
				for {
					k, err := io.ReadFull(src, msg[1:])
					if k > 0 {
						if err := c.ws.WriteMessage(websocket.BinaryMessage, msg[:1+k]); err != nil {
							sent <- err
							return
						}
					}
					if err != nil {
						sent <- nil
						return
					}
				}
			}()
			got := <-podDone
			if err := <-sent; err != nil {
				t.Errorf("client upload: %v", err)
			}
			expectSlowPodServed(t, d, "websocket_v4", got, want())
			if err := c.closeNormally(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Errorf("close: %v, want the daemon's normal close", err)
			}
		})
	}
}
