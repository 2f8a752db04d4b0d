package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/portforwardd/portforwardd/nsenter"
)

// TestDialTimeoutCountedAsTimeout: a pod port that drops SYNs on
// 127.0.0.1 (a full accept queue, a firewall), in a pod with nothing on
// [::1], fails its dial after --dial-timeout, and dial_errors_total says
// timeout: the alert on dial errors leaves "refused" to the users, and
// the [::1] refusal that followed the timeout named it. The dial fails at
// the flag's timeout, not the default's.
func TestDialTimeoutCountedAsTimeout(t *testing.T) {
	const dialTimeout = 300 * time.Millisecond
	d := startDaemon(t, "--dial-timeout", dialTimeout.String())
	p := newPod(t)
	const hung = 9
	p.blackhole(t, hung)
	start := time.Now()
	c, resp, body := dialRaw(t, d, rawPath(p, hung))
	took := time.Since(start)
	if c != nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("connect-tcp to a port that drops SYNs: %d %q, want 502", resp.StatusCode, body)
	}
	// The flag's timeout, not the default's 10 s, nor none.
	if took < dialTimeout || took > 5*time.Second {
		t.Errorf("the dial failed after %v; want it after --dial-timeout %v, well before the default's %v", took, dialTimeout, nsenter.DefaultDialTimeout)
	}
	timeouts := d.metric(t, `portforwardd_dial_errors_total{reason="timeout"}`)
	refused := d.metric(t, `portforwardd_dial_errors_total{reason="refused"}`)
	if timeouts != 1 || refused != 0 {
		t.Errorf("dial_errors_total timeout %v, refused %v after a dial whose 127.0.0.1 timed out and [::1] refused; want 1 and 0 (%s)",
			timeouts, refused, fmt.Sprintf("answer %q", body))
	}
}

// TestSPDYStreamOverLimitCountedAsRejected: a stream refused because its
// connection has --max-streams-per-session streams open is counted in
// streams_total{result="rejected"}, as README says of a stream a limit
// refuses (and as one refused at --max-pending-streams is), besides
// limit_hits_total{limit="streams_per_session"}; over SPDY and the
// tunnel.
func TestSPDYStreamOverLimitCountedAsRejected(t *testing.T) {
	d := startDaemon(t, "--max-streams-per-session", "2")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	const rstRefusedStream = 3
	for _, tr := range spdyTransports {
		t.Run(tr, func(t *testing.T) {
			protocol := map[string]string{"spdy": "spdy", "tunnel": "spdy_websocket"}[tr]
			rejected := fmt.Sprintf(`portforwardd_streams_total{protocol=%q,result="rejected"}`, protocol)
			const hits = `portforwardd_limit_hits_total{limit="streams_per_session"}`
			rejectedBefore, hitsBefore := d.metric(t, rejected), d.metric(t, hits)
			s := dialRawSPDY(t, d, p.route(), tr)
			// Two data streams of two pairs, held for their error streams.
			for _, req := range []string{"a", "b"} {
				id := s.id()
				s.send(synStreamFrame(id, 0, s.block(portHeaders("data", strconv.Itoa(port(ln)), req))))
				s.expect(fmt.Sprintf("SYN_REPLY(%d)", id), func(f spdyFrame) bool { return s.replyOrReset(f, id) })
			}
			over := s.id()
			s.send(synStreamFrame(over, 0, s.block(portHeaders("data", strconv.Itoa(port(ln)), "c"))))
			s.expectRST(over, rstRefusedStream)
			eventually(t, 5*time.Second, func() (bool, string) {
				r, h := d.metric(t, rejected)-rejectedBefore, d.metric(t, hits)-hitsBefore
				return r == 1 && h == 1, fmt.Sprintf("after a stream refused at the limit of 2: %s +%v, %s +%v; want +1 each", rejected, r, hits, h)
			})
			s.nc.Close()
		})
	}
}
