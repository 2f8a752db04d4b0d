package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// listenNoBacklog opens a listener in p's namespace whose accept queue
// holds one connection (somaxconn 0 there) and that never accepts: the
// first dial to it completes, every later one waits for a SYN-ACK that
// does not come until the dial times out.
func listenNoBacklog(t *testing.T, p *pod) net.Listener {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", p.netnsName, "sh", "-c", "echo 0 > /proc/sys/net/core/somaxconn").CombinedOutput(); err != nil {
		t.Fatalf("set somaxconn in %s: %v: %s", p.netnsName, err, out)
	}
	return p.listen(t, "tcp4", "127.0.0.1:0")
}

// h2Request writes the HEADERS of a POST for path on stream id.
func h2Request(t *testing.T, fr *http2.Framer, id uint32, path string) {
	t.Helper()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "node"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

// TestH2ResetDuringDialIsAReset: a client that resets its stream while
// the daemon still dials the pod gave up its own stream; no pod failed.
// It is counted as a reset, as on SPDY, not as a dial error, and it is
// no 502 refusal at info level: a client looping HEADERS and RST_STREAM
// (rapid reset) wrote one info line per stream and made every pod look
// as if it refused connections.
func TestH2ResetDuringDialIsAReset(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := listenNoBacklog(t, p)
	fr := dialH2Frames(t, d)
	path := rawPath(p, port(ln))
	h2Request(t, fr, 1, path) // fills the pod's accept queue: 200
	h2Request(t, fr, 3, path) // its dial waits for the pod
	for status := 0; status == 0; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if f.StreamID != 1 {
				t.Fatalf("stream %d answered while its dial should wait", f.StreamID)
			}
			status = 1
		case *http2.RSTStreamFrame:
			t.Fatalf("stream %d reset: %v", f.StreamID, f.ErrCode)
		}
	}
	if err := fr.WriteRSTStream(3, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		var sum float64
		var all []string
		for _, r := range []string{"ok", "reset", "aborted", "dial_error"} {
			v := d.metric(t, fmt.Sprintf(`portforwardd_streams_total{protocol="h2",result=%q}`, r))
			sum += v
			all = append(all, fmt.Sprintf("%s %v", r, v))
		}
		return sum == 1, "streams_total{h2}: " + strings.Join(all, ", ")
	})
	if v := d.metric(t, `portforwardd_streams_total{protocol="h2",result="dial_error"}`); v != 0 {
		t.Errorf("streams_total{h2,dial_error} %v after the client reset during the dial, want 0 (reset)", v)
	}
	if v := d.metric(t, `portforwardd_streams_total{protocol="h2",result="reset"}`); v != 1 {
		t.Errorf("streams_total{h2,reset} %v, want 1", v)
	}
	for _, l := range d.logLines() {
		if strings.Contains(l, `"level":"INFO"`) && strings.Contains(l, `"status":502`) {
			t.Errorf("the client's own reset logged as a 502 refusal at info: %s", l)
		}
	}
}
