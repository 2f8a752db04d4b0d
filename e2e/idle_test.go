package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestIdleTimeoutEndsRawAndH2Forwards: --stream-idle-timeout, which closes
// SPDY and WebSocket sessions with no frame, also ends a raw forward and an
// HTTP/2 stream that move no byte for that long: an echo, then silence,
// and the client sees a reset (RST on raw, RST_STREAM on HTTP/2), counted
// as aborted, and logged at info (the reason is told by nothing else).
// Without it they were held until a peer spoke or vanished.
func TestIdleTimeoutEndsRawAndH2Forwards(t *testing.T) {
	const idle = 2 * time.Second
	d := startDaemon(t, "--stream-idle-timeout", idle.String(), "--log-level", "info")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)

	t.Run("raw", func(t *testing.T) {
		c, _, body := dialRaw(t, d, rawPath(p, port(ln)))
		if c == nil {
			t.Fatalf("connect-tcp upgrade refused: %s", body)
		}
		start := time.Now()
		echoOnce(t, c, "ping")
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		rest, err := io.ReadAll(c)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("raw forward after an echo and silence: read %q, %v; want a reset", rest, err)
		}
		if took := time.Since(start); took < idle {
			t.Fatalf("raw forward cut after %v, before the idle timeout %v", took, idle)
		}
	})
	t.Run("h2", func(t *testing.T) {
		resp, pw := openH2Stream(t, d, p, port(ln))
		start := time.Now()
		echoThrough(t, pw, resp.Body, "ping")
		ended := make(chan error, 1)
		go func() {
			_, err := io.ReadAll(resp.Body)
			ended <- err
		}()
		select {
		case err := <-ended:
			if err == nil {
				t.Fatal("HTTP/2 stream after an echo and silence: a clean end; want it reset")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("HTTP/2 stream still open 30 s after an echo and silence")
		}
		if took := time.Since(start); took < idle {
			t.Fatalf("HTTP/2 stream cut after %v, before the idle timeout %v", took, idle)
		}
	})
	for _, proto := range []string{"raw", "h2"} {
		eventually(t, 10*time.Second, func() (bool, string) {
			n := d.metric(t, fmt.Sprintf(`portforwardd_streams_total{protocol=%q,result="aborted"}`, proto))
			return n == 1, fmt.Sprintf("streams_total{protocol=%q,result=aborted}: %v, want 1", proto, n)
		})
	}
	// The log is written behind a queue: the lines may follow the count.
	eventually(t, 10*time.Second, func() (bool, string) {
		logged := map[string]bool{}
		for _, l := range d.logLines() {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) == nil && rec["level"] == "INFO" && rec["msg"] == "forward done" &&
				strings.Contains(fmt.Sprint(rec["err"]), "idle timeout") {
				logged[fmt.Sprint(rec["protocol"])] = true
			}
		}
		return logged["raw"] && logged["h2"], fmt.Sprintf("info lines \"forward done\" with the idle timeout for raw and h2: %v", logged)
	})
}
