package e2e

import (
	"fmt"
	"net/http"
	"testing"
)

// TestDialTimeoutCountedAsTimeout: a pod port that drops SYNs on
// 127.0.0.1 (a full accept queue, a firewall), in a pod with nothing on
// [::1], fails its dial after --dial-timeout, and dial_errors_total says
// timeout: the alert on dial errors leaves "refused" to the users, and
// the [::1] refusal that followed the timeout named it.
func TestDialTimeoutCountedAsTimeout(t *testing.T) {
	d := startDaemon(t, "--dial-timeout", "300ms")
	p := newPod(t)
	const hung = 9
	p.blackhole(t, hung)
	c, resp, body := dialRaw(t, d, rawPath(p, hung))
	if c != nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("connect-tcp to a port that drops SYNs: %d %q, want 502", resp.StatusCode, body)
	}
	timeouts := d.metric(t, `portforwardd_dial_errors_total{reason="timeout"}`)
	refused := d.metric(t, `portforwardd_dial_errors_total{reason="refused"}`)
	if timeouts != 1 || refused != 0 {
		t.Errorf("dial_errors_total timeout %v, refused %v after a dial whose 127.0.0.1 timed out and [::1] refused; want 1 and 0 (%s)",
			timeouts, refused, fmt.Sprintf("answer %q", body))
	}
}
