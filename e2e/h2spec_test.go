package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
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
	// Stream 3 is sent once stream 1 has its answer: sent together, their
	// dials race for the queue's one place (a CI failure).
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
	h2Request(t, fr, 3, path) // its dial waits for the pod
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

// TestH2MethodAnswerNamesH2Methods: over HTTP/2 only POST forwards (and
// OPTIONS asks), so a refused method's 405 says so, whatever the method:
// a PUT was told "use GET or POST" with Allow: GET, POST, OPTIONS, and a
// client that followed it with a GET got a second 405.
func TestH2MethodAnswerNamesH2Methods(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	client := h2Client()
	for _, tt := range []struct{ method, path, allow string }{
		{http.MethodGet, rawPath(p, port(ln)), "POST, OPTIONS"},
		{http.MethodPut, rawPath(p, port(ln)), "POST, OPTIONS"},
		{http.MethodDelete, p.route(), "POST, OPTIONS"},
		{http.MethodPut, "/portforward/AbCd_-12", "POST"},
	} {
		req, err := http.NewRequest(tt.method, "http://"+d.addr+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tt.allow ||
			strings.TrimSpace(string(body)) != "HTTP/2 port-forward streams are POST requests" {
			t.Errorf("%s %s: %s %d, Allow %q, %q; want HTTP/2 405, Allow %q, \"HTTP/2 port-forward streams are POST requests\"",
				tt.method, tt.path, resp.Proto, resp.StatusCode, resp.Header.Get("Allow"), body, tt.allow)
		}
	}
	// What Allow names is allowed: OPTIONS asks, POST forwards.
	req, _ := http.NewRequest(http.MethodOptions, "http://"+d.addr+p.route(), nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Allow") != "POST, OPTIONS" {
		t.Errorf("OPTIONS over HTTP/2: %d, Allow %q; want 204, \"POST, OPTIONS\"", resp.StatusCode, resp.Header.Get("Allow"))
	}
	resp, err = client.Post("http://"+d.addr+rawPath(p, port(ln)), "application/octet-stream", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "hi" {
		t.Errorf("POST over HTTP/2: %d %q, want 200 \"hi\"", resp.StatusCode, body)
	}
}

// TestH2RapidResetLeavesNothing: a client that loops HEADERS and
// RST_STREAM on one connection (CVE-2023-44487) makes the daemon dial the
// pod for many of those streams; every such pod connection is closed,
// nothing stays open in the daemon, none of it is a dial error, and
// another client is served meanwhile.
func TestH2RapidResetLeavesNothing(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	var open, accepted atomic.Int64
	serveEach(ln, func(c *net.TCPConn) {
		open.Add(1)
		accepted.Add(1)
		defer open.Add(-1)
		io.Copy(c, c)
	})
	fds := d.openFDs(t)

	fr := dialH2Frames(t, d)
	go func() { // the daemon's frames are read and dropped, so its writes never wait
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	}()
	const n = 5000
	path := rawPath(p, port(ln))
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for i := range n {
		id := uint32(2*i + 1)
		hb.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "node"}, {":path", path}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			t.Fatalf("stream %d: %v", id, err)
		}
		if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			t.Fatalf("stream %d: %v", id, err)
		}
	}
	// Another client is served.
	client := h2Client()
	resp, err := client.Post(h2URL(d, p, port(ln)), "application/octet-stream", strings.NewReader("still here"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	client.CloseIdleConnections()
	if resp.StatusCode != http.StatusOK || string(body) != "still here" || err != nil {
		t.Fatalf("another client during the flood: %d %q %v", resp.StatusCode, body, err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		active := d.metric(t, `portforwardd_streams_active{protocol="h2"}`)
		sessions := d.metric(t, `portforwardd_sessions_active{protocol="h2"}`)
		got := d.openFDs(t)
		return active == 0 && sessions == 0 && open.Load() == 0 && got <= fds+1,
			fmt.Sprintf("streams_active %v, sessions_active %v, pod connections open %d of %d accepted, daemon fds %d (%d before; the flood's connection is one)",
				active, sessions, open.Load(), accepted.Load(), got, fds)
	})
	if v := d.metric(t, `portforwardd_streams_total{protocol="h2",result="dial_error"}`); v != 0 {
		t.Errorf("streams_total{h2,dial_error} %v: the client's resets counted as pods that could not be dialed", v)
	}
	t.Logf("%d streams reset, %d pod connections accepted", n, accepted.Load())
}

// TestH2StalledStreamsDoNotStopTheConnection: streams whose pods read
// nothing hold their unread bytes against the connection's window too;
// once they hold all of it (--session-buffer-bytes / --stream-buffer-bytes
// such streams), every other stream of the connection waits. As on SPDY,
// the stream whose pod has read nothing for longest, beyond StallTimeout
// (10 s), is then reset, and the others go on: the connection stopped for
// as long as those pods did not read.
func TestH2StalledStreamsDoNotStopTheConnection(t *testing.T) {
	d := startDaemon(t, "--stream-buffer-bytes", "1Mi", "--session-buffer-bytes", "2Mi")
	p := newPod(t)
	stuck := p.listen(t, "tcp4", "127.0.0.1:0")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	serveEach(stuck, func(c *net.TCPConn) { <-release }) // reads nothing
	echo := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(echo)
	client := h2Client()
	defer client.CloseIdleConnections()

	// Two uploads that never end, to pods that never read, beside a third
	// of 64 MiB to a pod that echoes: the two take window whenever the
	// third frees some, until they hold both their 1 MiB windows, and so
	// the connection's 2 MiB, long before the third is done.
	upload := func(port int, body io.Reader) *http.Response {
		t.Helper()
		resp, err := client.Post(h2URL(d, p, port), "application/octet-stream", body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST: %s", resp.Status)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for range 2 {
		upload(port(stuck), zeros{})
	}
	const size = 64 << 20
	resp := upload(port(echo), io.LimitReader(zeros{}, size))
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := io.Copy(io.Discard, resp.Body)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		if r.err != nil || r.n != size {
			t.Fatalf("third stream: echoed %d bytes, %v; want %d", r.n, r.err, size)
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("the third stream did not finish within 40 s: the stalled streams hold the connection's whole window (up %v bytes)",
			d.metric(t, `portforwardd_bytes_total{direction="client_to_pod",protocol="h2"}`))
	}
	// One stalled stream was reset, and counted; the other is still open.
	if v := d.metric(t, `portforwardd_limit_hits_total{limit="stream_buffer"}`); v != 1 {
		t.Errorf("limit_hits_total{stream_buffer} %v, want the one stall reset counted", v)
	}
	if v := d.metric(t, `portforwardd_streams_total{protocol="h2",result="reset"}`); v != 1 {
		t.Errorf("streams_total{h2,reset} %v, want 1 (the stalled stream reset)", v)
	}
	eventually(t, 10*time.Second, func() (bool, string) { // the echo's forward ends just after its END_STREAM
		v := d.metric(t, `portforwardd_streams_active{protocol="h2"}`)
		return v == 1, fmt.Sprintf("streams_active{h2} %v, want 1 (the other stalled stream)", v)
	})
}

// TestH2SlowlyReadingPodIsNotReset: a pod that reads an upload slowly but
// steadily (40 KiB/s) keeps its HTTP/2 stream, even when its unread bytes
// alone could hold the connection's window (--session-buffer-bytes equal
// to --stream-buffer-bytes): the stall reset is for pods that take
// nothing. Its write was seen to progress only when a whole 256 KiB
// chunk went into the pod's socket, which, with the kernel waking a
// writer only once a third of the socket's send buffer is free, took
// over 30 s at that rate, and the stream was reset as stalled after 10 s.
func TestH2SlowlyReadingPodIsNotReset(t *testing.T) {
	d := startDaemon(t, "--stream-buffer-bytes", "1Mi", "--session-buffer-bytes", "1Mi")
	p := newPod(t)
	slow := p.listen(t, "tcp4", "127.0.0.1:0")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var read atomic.Int64
	serveEach(slow, func(c *net.TCPConn) {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		buf := make([]byte, 4<<10)
		for {
			select {
			case <-release:
				return
			case <-tick.C:
			}
			n, err := io.ReadFull(c, buf)
			read.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	client := h2Client()
	defer client.CloseIdleConnections()
	resp, err := client.Post(h2URL(d, p, port(slow)), "application/octet-stream", zeros{})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST: %s", resp.Status)
	}
	ended := make(chan error, 1)
	go func() { // the pod writes nothing: the body ends only with the stream
		_, err := io.Copy(io.Discard, resp.Body)
		ended <- err
	}()
	const watch = 25 * time.Second // past StallTimeout (10 s), twice
	start := time.Now()
	select {
	case err := <-ended:
		t.Fatalf("stream ended after the pod read %d bytes in %v: %v (limit_hits_total{stream_buffer} %v)",
			read.Load(), time.Since(start).Round(time.Second), err, d.metric(t, `portforwardd_limit_hits_total{limit="stream_buffer"}`))
	case <-time.After(watch):
	}
	if v := d.metric(t, `portforwardd_limit_hits_total{limit="stream_buffer"}`); v != 0 {
		t.Errorf("limit_hits_total{stream_buffer} %v, want 0", v)
	}
	if n := read.Load(); n < 10*40<<10 {
		t.Errorf("pod read %d bytes in %v, want it to have read steadily", n, watch)
	}
}

// TestH2StalledStreamsShareTheNodeBudget: the unread bytes of HTTP/2
// streams whose pods read nothing count against --buffer-bytes across
// connections, as SPDY sessions' do: once stalled streams on any
// connections may hold all of it (--buffer-bytes / --stream-buffer-bytes
// of them), the one whose pod has read nothing for longest, beyond the
// stall timeout, is reset. Each connection stayed within its own window,
// so the daemon held a window of bytes per connection, as many as a
// client opened, with nothing node-wide to bound them.
func TestH2StalledStreamsShareTheNodeBudget(t *testing.T) {
	d := startDaemon(t, "--stream-buffer-bytes", "1Mi", "--session-buffer-bytes", "2Mi", "--buffer-bytes", "2Mi")
	p := newPod(t)
	stuck := p.listen(t, "tcp4", "127.0.0.1:0")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	serveEach(stuck, func(c *net.TCPConn) { <-release }) // reads nothing

	// One upload that never ends on each of two connections: neither
	// connection has more than one stalled stream, which its window
	// holds; the two together hold the node's budget.
	ended := make(chan int, 2)
	for i := range 2 {
		client := h2Client()
		t.Cleanup(client.CloseIdleConnections)
		resp, err := client.Post(h2URL(d, p, port(stuck)), "application/octet-stream", zeros{})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST: %s", resp.Status)
		}
		t.Cleanup(func() { resp.Body.Close() })
		go func() {
			io.Copy(io.Discard, resp.Body)
			ended <- i
		}()
	}
	select {
	case <-ended:
	case <-time.After(40 * time.Second):
		t.Fatalf("no stalled stream reset within 40 s: two connections' stalled streams hold --buffer-bytes (up %v bytes)",
			d.metric(t, `portforwardd_bytes_total{direction="client_to_pod",protocol="h2"}`))
	}
	if v := d.metric(t, `portforwardd_limit_hits_total{limit="global_buffer"}`); v != 1 {
		t.Errorf("limit_hits_total{global_buffer} %v, want the one stall reset counted", v)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		v := d.metric(t, `portforwardd_streams_active{protocol="h2"}`)
		return v == 1, fmt.Sprintf("streams_active{h2} %v, want 1 (the other stalled stream)", v)
	})
	select {
	case i := <-ended:
		t.Fatalf("both stalled streams ended (the second: %d); one reset gives the budget back", i)
	default:
	}
}
