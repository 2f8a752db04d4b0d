package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestOpenForwardGoroutineCost: an open forwarded connection that moves
// nothing costs the daemon two goroutines (each with its stack: the copy
// of each direction, one of them on the goroutine that runs the forward),
// on the kubectl paths, raw (its connection's included) and HTTP/2:
// thousands of open forwards on a node are thousands of times that. A
// SPDY forward held 5 (the forward, the data stream's watch, each copy
// direction, the reset watch), a raw or HTTP/2 one 4.
func TestOpenForwardGoroutineCost(t *testing.T) {
	const n, most = 40, 2
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	// cost opens one forward (warm-up) and then n more, each echoed once
	// and left open, and checks the goroutines they added.
	cost := func(t *testing.T, protocol string, open func(i int)) {
		active := func() float64 {
			return d.metric(t, fmt.Sprintf(`portforwardd_streams_active{protocol=%q}`, protocol))
		}
		open(-1)
		eventually(t, 10*time.Second, func() (bool, string) {
			return active() == 1, fmt.Sprintf("streams_active %v, want the warm-up's 1", active())
		})
		before := d.metric(t, "go_goroutines")
		for i := range n {
			open(i)
		}
		eventually(t, 10*time.Second, func() (bool, string) {
			return active() == n+1, fmt.Sprintf("streams_active %v, want %d", active(), n+1)
		})
		// Goroutines of the daemon's own that come and go (a memory
		// release, a timer's function) may add one for a moment.
		eventually(t, 10*time.Second, func() (bool, string) {
			per := (d.metric(t, "go_goroutines") - before) / n
			return per <= most, fmt.Sprintf("%s: %.2f goroutines per open forward, want at most %d", protocol, per, most)
		})
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			f := startForward(t, d, tr, p.route(), port(ln))
			cost(t, tr.protocol, func(i int) { echoOnce(t, f.dial(t), fmt.Sprint(i)) })
		})
	}
	t.Run("raw", func(t *testing.T) {
		cost(t, "raw", func(i int) {
			c, _, body := dialRaw(t, d, rawPath(p, port(ln)))
			if c == nil {
				t.Fatalf("connect-tcp upgrade refused: %s", body)
			}
			echoOnce(t, c, fmt.Sprint(i))
		})
	})
	t.Run("h2", func(t *testing.T) {
		client := h2Client() // one connection for all the streams
		cost(t, "h2", func(i int) {
			resp, pw := openH2StreamOn(t, client, d, p, port(ln))
			echoThrough(t, pw, resp.Body, fmt.Sprint(i))
		})
	})
}
