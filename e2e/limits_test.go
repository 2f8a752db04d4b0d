package e2e

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLimitsRefuseTheClientOnly: past --max-sessions a client gets a 503
// saying why, an oversized header block a 431, a request that never
// finishes its headers a closed connection after --read-header-timeout;
// each is counted, and the sessions already running are unaffected.
func TestLimitsRefuseTheClientOnly(t *testing.T) {
	d := startDaemon(t, "--max-sessions", "2", "--max-header-bytes", "4Ki", "--read-header-timeout", "1s")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	if got := d.metric(t, `portforwardd_limit{limit="sessions"}`); got != 2 {
		t.Fatalf(`portforwardd_limit{limit="sessions"} = %v, want 2`, got)
	}
	f1 := startForward(t, d, transports[0], p.route(), port(ln))
	f2 := startForward(t, d, transports[0], p.route(), port(ln))

	resp, body := rawRequest(t, d.addr, "GET "+p.route()+" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || strings.TrimSpace(body) != "too many port-forward sessions on this node (limit 2); try again later" {
		t.Fatalf("third session: %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if got := d.metric(t, `portforwardd_limit_hits_total{limit="sessions"}`); got != 1 {
		t.Errorf("limit_hits_total{sessions} = %v, want 1", got)
	}
	// The two sessions still forward.
	echoOnce(t, f1.dial(t), "first still works")
	echoOnce(t, f2.dial(t), "second still works")
	// A slot frees when a session ends.
	f1.close()
	eventually(t, 10*time.Second, func() (bool, string) {
		got := d.metric(t, `portforwardd_sessions_active{protocol="spdy"}`)
		return got == 1, "first session still counted"
	})
	f3 := startForward(t, d, transports[0], p.route(), port(ln))
	echoOnce(t, f3.dial(t), "third after a slot freed")

	// A header block over 4 KiB.
	resp, _ = rawRequest(t, d.addr, "GET "+p.route()+" HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 8<<10)+"\r\n\r\n")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("8 KiB header: %d, want 431", resp.StatusCode)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		return d.metric(t, `portforwardd_limit_hits_total{limit="header_bytes"}`) == 1, "431 not counted"
	})

	// Headers that never end: the connection is closed after about 1s.
	c, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	io.WriteString(c, "GET "+p.route()+" HTTP/1.1\r\nHost: x\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("slow request: read %d bytes, %v after %v; want the daemon to close it after --read-header-timeout 1s", n, err, time.Since(start))
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		return d.metric(t, `portforwardd_limit_hits_total{limit="read_header_timeout"}`) == 1, "read header timeout not counted"
	})
	echoOnce(t, f2.dial(t), "second unaffected by all of it")
}
