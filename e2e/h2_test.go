package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Client speaks HTTP/2 with prior knowledge to the daemon: every
// request is a stream of one shared connection.
func h2Client() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p, MaxConnsPerHost: 1}}
}

func h2URL(d *daemon, p *pod, port int) string {
	return fmt.Sprintf("http://%s%s?port=%d", d.addr, p.route(), port)
}

// TestH2ThousandStreams runs 1000 forwarded connections as streams of one
// HTTP/2 connection, all open at once: the pod echoes none of them until it
// has accepted all 1000, and the client dials the daemon once. Each stream
// echoes its own data.
func TestH2ThousandStreams(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	const n, size = 1000, 16 << 10
	var accepted atomic.Int32
	allOpen := make(chan struct{})
	serveEach(ln, func(c *net.TCPConn) {
		if accepted.Add(1) == n {
			close(allOpen)
		}
		<-allOpen // every stream is open before any is answered
		io.Copy(c, c)
		c.CloseWrite()
	})
	var dials atomic.Int32
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &protocols, MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The connection first, and the daemon's SETTINGS with it: until they
	// come, Go's client takes a connection to allow 100 streams and dials
	// another for the 101st.
	req, _ := http.NewRequestWithContext(ctx, http.MethodOptions, fmt.Sprintf("http://%s%s", d.addr, p.route()), nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.ProtoMajor != 2 {
		t.Fatalf("OPTIONS: %s %d", resp.Proto, resp.StatusCode)
	}
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for range n {
		wg.Go(func() {
			data := make([]byte, size)
			rand.Read(data)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h2URL(d, p, port(ln)), bytes.NewReader(data))
			resp, err := client.Do(req)
			if err != nil {
				errc <- err
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || sha256.Sum256(got) != sha256.Sum256(data) {
				errc <- fmt.Errorf("status %d, %d bytes back, err %v", resp.StatusCode, len(got), err)
				return
			}
			if resp.ProtoMajor != 2 {
				errc <- fmt.Errorf("protocol %s", resp.Proto)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		t.Fatalf("%d of %d streams reached the pod", accepted.Load(), n)
	}
	if got := dials.Load(); got != 1 {
		t.Errorf("the client dialed the daemon %d times, want once: the streams did not fit one connection", got)
	}
	if got := d.metric(t, `portforwardd_streams_total{protocol="h2",result="ok"}`); got != n {
		t.Errorf("streams_total{protocol=h2,result=ok}: got %v, want %d", got, n)
	}
}

// TestH2StuckStreamDoesNotSlowAnother: a stream whose pod never reads holds
// its own window only; another stream on the same connection moves 256 MiB.
func TestH2StuckStreamDoesNotSlowAnother(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	hold := p.listen(t, "tcp4", "127.0.0.1:0")
	go func() {
		for {
			c, err := hold.Accept()
			if err != nil {
				return
			}
			defer c.Close() // never read
		}
	}()
	echo := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(echo)
	client := h2Client()
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		resp, err := client.Post(h2URL(d, p, port(hold)), "application/octet-stream", pr)
		if err == nil {
			resp.Body.Close()
		}
	}()
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	const size = 256 << 20
	resp, err := client.Post(h2URL(d, p, port(echo)), "application/octet-stream", io.LimitReader(rand.Reader, size))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != size {
		t.Fatalf("echo stream: %d bytes, %v", n, err)
	}
	t.Logf("256 MiB echoed beside a stuck stream in %v", time.Since(start))
}

func TestH2Errors(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	closed := p.listen(t, "tcp4", "127.0.0.1:0")
	dead := port(closed)
	closed.Close()
	client := h2Client()
	for _, tt := range []struct {
		url    string
		status int
		want   string
	}{
		{h2URL(d, p, dead), http.StatusBadGateway, fmt.Sprintf("error forwarding port %d to pod %s/%s, uid : ", dead, p.namespace, p.name)},
		{fmt.Sprintf("http://%s/portForward/default/nope?port=80", d.addr), http.StatusNotFound, "pod does not exist"},
		{fmt.Sprintf("http://%s%s", d.addr, p.route()), http.StatusBadRequest, `query parameter "port" is required`},
	} {
		resp, err := client.Post(tt.url, "application/octet-stream", strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.HasPrefix(string(body), tt.want) || resp.ProtoMajor != 2 {
			t.Errorf("%s: got %s %d %q, want HTTP/2 %d %q…", tt.url, resp.Proto, resp.StatusCode, body, tt.status, tt.want)
		}
	}
}

// TestH2KubernetesScenarios runs the Kubernetes e2e cases over HTTP/2
// streams, with the pod bound to 127.0.0.1 and to 0.0.0.0.
func TestH2KubernetesScenarios(t *testing.T) {
	d := startDaemon(t)
	client := h2Client()
	for _, bm := range bindModes {
		t.Run(bm.name+"/no data", func(t *testing.T) {
			p := newPod(t)
			ln := p.listen(t, "tcp4", bm.addr)
			logs := runTester(ln, testerConfig{expected: "abc", chunks: 1, chunkSize: 1})
			resp, err := client.Post(h2URL(d, p, port(ln)), "application/octet-stream", strings.NewReader(""))
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)
			resp.Body.Close()
			want := []string{"Accepted client connection", "Expected to read 3 bytes from client, but got 0 instead. err=EOF"}
			if got := collect(t, logs); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("tester log %q, want %q", got, want)
			}
		})
		t.Run(bm.name+"/data", func(t *testing.T) {
			p := newPod(t)
			ln := p.listen(t, "tcp4", bm.addr)
			logs := runTester(ln, testerConfig{expected: "abc", chunks: 10, chunkSize: 10, interval: 10 * time.Millisecond})
			pr, pw := io.Pipe()
			go pw.Write([]byte("abc")) // then the request stays open
			resp, err := client.Post(h2URL(d, p, port(ln)), "application/octet-stream", pr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body) // the pod's EOF ends the stream
			resp.Body.Close()
			pw.Close()
			if err != nil || string(got) != strings.Repeat("x", 100) {
				t.Fatalf("read %q, %v; want 100 'x'", got, err)
			}
			if log := collect(t, logs); !strings.Contains(strings.Join(log, "|"), "Received expected client data") {
				t.Fatalf("tester log %q", log)
			}
		})
	}
}

// openH2Stream opens a forwarded connection as an HTTP/2 stream whose
// request body the test writes as it goes; both are closed at the end.
func openH2Stream(t *testing.T, d *daemon, p *pod, port int) (*http.Response, *io.PipeWriter) {
	t.Helper()
	return openH2StreamOn(t, h2Client(), d, p, port)
}

// openH2StreamOn is openH2Stream on client's connection.
func openH2StreamOn(t *testing.T, client *http.Client, d *daemon, p *pod, port int) (*http.Response, *io.PipeWriter) {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	resp, err := client.Post(h2URL(d, p, port), "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, pw
}

// TestH2PodResetEndsItsSession: a pod that resets its connection resets
// the stream (RST_STREAM), and the stream's session ends with it: the
// gauge returns to zero, and a SIGTERM then finds nothing to wait for.
func TestH2PodResetEndsItsSession(t *testing.T) {
	d := startDaemon(t, "--drain-timeout", "60s")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveReset(ln, "hello")
	resp, pw := openH2Stream(t, d, p, port(ln))
	got := make([]byte, len("hello"))
	if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v; want \"hello\"", got, err)
	}
	go pw.Write([]byte("x"))
	if rest, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("read %q and a clean end; want the stream reset", rest)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		active := d.metric(t, `portforwardd_sessions_active{protocol="h2"}`)
		ended := d.metric(t, `portforwardd_sessions_total{protocol="h2",result="closed"}`)
		return active == 0 && ended == 1, fmt.Sprintf("sessions_active %v, sessions_total closed %v", active, ended)
	})
	d.stop(t, 20*time.Second, "with no session left (its drain timeout is 60 s)")
}

// TestH2DrainTimeoutClosesStuckStream: an HTTP/2 stream still open at
// --drain-timeout is reset and the daemon exits 0, as the upgraded
// transports' sessions are closed.
func TestH2DrainTimeoutClosesStuckStream(t *testing.T) {
	d := startDaemon(t, "--drain-timeout", "300ms")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	resp, pw := openH2Stream(t, d, p, port(ln))
	go pw.Write([]byte("open"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "open" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	d.stop(t, 30*time.Second, "after its drain timeout with an HTTP/2 stream open")
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("the stuck stream ended cleanly; want it reset")
	}
}

// TestH2WindowsFollowBufferFlags: the daemon's HTTP/2 flow control holds
// a client to --stream-buffer-bytes per stream (SETTINGS_INITIAL_WINDOW_SIZE)
// and --session-buffer-bytes per connection (the connection's window), as
// the SPDY engine's buffers are bounded. Neither is 1 MiB, Go's default
// for both: a window the daemon failed to set would pass as set.
func TestH2WindowsFollowBufferFlags(t *testing.T) {
	const stream, session = 2 << 20, 5 << 20
	d := startDaemon(t, "--stream-buffer-bytes", "2Mi", "--session-buffer-bytes", "5Mi")
	c, err := net.Dial("tcp4", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	// The client preface and an empty SETTINGS frame.
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		t.Fatal(err)
	}
	const initialWindow = 65535 // RFC 9113 §6.9.2, before any update
	streamWindow, connWindow := -1, initialWindow
	br := bufio.NewReader(c)
	for streamWindow < 0 || connWindow == initialWindow {
		var hdr [9]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			t.Fatalf("read frame: %v (stream window %d, connection window %d so far)", err, streamWindow, connWindow)
		}
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		if _, err := io.ReadFull(br, payload); err != nil {
			t.Fatal(err)
		}
		typ, flags, id := hdr[3], hdr[4], binary.BigEndian.Uint32(hdr[5:])&(1<<31-1)
		switch {
		case typ == 0x4 && flags&0x1 == 0: // SETTINGS, not an ACK
			streamWindow = initialWindow
			for s := payload; len(s) >= 6; s = s[6:] {
				if binary.BigEndian.Uint16(s) == 0x4 { // INITIAL_WINDOW_SIZE
					streamWindow = int(binary.BigEndian.Uint32(s[2:]))
				}
			}
		case typ == 0x8 && id == 0: // WINDOW_UPDATE for the connection
			connWindow += int(binary.BigEndian.Uint32(payload) & (1<<31 - 1))
		}
	}
	if streamWindow != stream || connWindow != session {
		t.Errorf("stream window %d, connection window %d; want %d and %d", streamWindow, connWindow, stream, session)
	}
}

// TestH2ChunkOf4KiBIsFlushed: a pod that sends exactly 4 KiB and waits
// for the answer gets it: the 4 KiB reach the client at once, not held in
// the HTTP/2 handler's 4 KiB buffer until the pod sends more.
func TestH2ChunkOf4KiBIsFlushed(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	for _, size := range []int{4<<10 - 1, 4 << 10, 4<<10 + 1} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			serveOnce := make(chan struct{})
			go func() {
				defer close(serveOnce)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				c.Write(bytes.Repeat([]byte("a"), size))
				c.Read(make([]byte, 1)) // the client's answer, after it has all of them
				io.WriteString(c, "done")
			}()
			resp, pw := openH2Stream(t, d, p, port(ln))
			got := make(chan error, 1)
			go func() {
				buf := make([]byte, size)
				_, err := io.ReadFull(resp.Body, buf)
				got <- err
			}()
			select {
			case err := <-got:
				if err != nil {
					t.Fatalf("read the pod's %d bytes: %v", size, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the pod's %d bytes did not reach the client within 10 s", size)
			}
			pw.Write([]byte("k"))
			rest, err := io.ReadAll(resp.Body)
			if err != nil || string(rest) != "done" {
				t.Fatalf("then read %q, %v; want \"done\"", rest, err)
			}
			<-serveOnce
		})
	}
}

// h2StreamWithPodReset opens stream 1 by hand (the default window:
// 65535 bytes) to a pod that sends far more than that, reads the window's
// worth, and then has the pod reset its connection. next reads frames
// until want says stop, acknowledging SETTINGS.
func h2StreamWithPodReset(t *testing.T, d *daemon) (fr *http2.Framer, next func(want func(f http2.Frame) bool)) {
	t.Helper()
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	resetNow, resetDone := make(chan struct{}), make(chan struct{})
	serveEach(ln, func(c *net.TCPConn) {
		go c.Write(make([]byte, 1<<20)) // far more than the client's window
		<-resetNow
		c.SetLinger(0)
		c.Close()
		close(resetDone)
	})

	fr = dialH2Frames(t, d)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", d.addr}, {":path", rawPath(p, port(ln))}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	next = func(want func(f http2.Frame) bool) {
		t.Helper()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("read frame: %v", err)
			}
			if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
				fr.WriteSettingsAck()
			}
			if want(f) {
				return
			}
		}
	}
	received := 0
	next(func(f http2.Frame) bool {
		if df, ok := f.(*http2.DataFrame); ok && df.StreamID == 1 {
			received += len(df.Data())
		}
		if rf, ok := f.(*http2.RSTStreamFrame); ok {
			t.Fatalf("stream reset before the pod's: %v", rf.ErrCode)
		}
		return received >= 65535
	})
	close(resetNow)
	<-resetDone
	return fr, next
}

// TestH2PodResetWhileClientNotReading: a pod that resets its connection
// while the client is uploading and not reading the response (its stream
// window full, the daemon's write of the pod's bytes waiting for it) still
// resets the stream: the client's upload is not left to stall on a body
// nobody reads, and the stream is counted as ended.
func TestH2PodResetWhileClientNotReading(t *testing.T) {
	d := startDaemon(t)
	fr, next := h2StreamWithPodReset(t, d)

	// Upload on. Each 4 KiB the daemon takes from the body is answered
	// with a WINDOW_UPDATE for the stream; the first write to the pod after
	// its reset fails, and the stream must then be reset.
	chunk := bytes.Repeat([]byte("x"), 4<<10)
	for i := 0; ; i++ {
		if i == 64 {
			t.Fatal("the daemon kept taking the upload for a pod that reset")
		}
		if err := fr.WriteData(1, false, chunk); err != nil {
			t.Fatal(err)
		}
		var reset bool
		next(func(f http2.Frame) bool {
			switch f := f.(type) {
			case *http2.RSTStreamFrame:
				reset = f.StreamID == 1
				return reset
			case *http2.WindowUpdateFrame:
				return f.StreamID == 1
			}
			return false
		})
		if reset {
			break
		}
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		active := d.metric(t, `portforwardd_streams_active{protocol="h2"}`)
		resets := d.metric(t, `portforwardd_streams_total{protocol="h2",result="reset"}`)
		return active == 0 && resets == 1, fmt.Sprintf("streams_active %v, streams_total reset %v", active, resets)
	})
}

// TestH2PodGoneWhileClientSilent: a pod that resets its connection while
// the client neither reads the response (its stream window full, the
// daemon's write of the pod's bytes waiting for it) nor uploads is noticed
// although nothing reads or writes the pod's socket: the stream is reset
// and its session ends. The daemon held the stream, its --max-sessions
// slot and the pod's socket until the client acted.
func TestH2PodGoneWhileClientSilent(t *testing.T) {
	d := startDaemon(t)
	_, next := h2StreamWithPodReset(t, d)

	// The client stays silent: it neither reads nor uploads. The stream
	// must still be reset, and its session end.
	next(func(f http2.Frame) bool {
		rf, ok := f.(*http2.RSTStreamFrame)
		return ok && rf.StreamID == 1
	})
	eventually(t, 10*time.Second, func() (bool, string) {
		n := d.metric(t, `portforwardd_sessions_active{protocol="h2"}`)
		return n == 0, fmt.Sprintf("h2 sessions_active %v after the pod reset, the client silent", n)
	})
}

// TestH2ClientResetCountsAsReset: a client that resets its stream
// (RST_STREAM CANCEL, what Go's client sends when a request is canceled)
// ends the forwarded connection as a reset, every time: it is the
// client's reset, not the end of the daemon's session.
func TestH2ClientResetCountsAsReset(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	client := h2Client()
	const rounds = 20
	for i := range rounds {
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h2URL(d, p, port(ln)), pr)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		go pw.Write([]byte("hi"))
		got := make([]byte, 2)
		if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != "hi" {
			t.Fatalf("round %d: echo %q, %v", i, got, err)
		}
		cancel() // RST_STREAM CANCEL
		resp.Body.Close()
		pw.Close()
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		active := d.metric(t, `portforwardd_streams_active{protocol="h2"}`)
		resets := d.metric(t, `portforwardd_streams_total{protocol="h2",result="reset"}`)
		aborted := d.metric(t, `portforwardd_streams_total{protocol="h2",result="aborted"}`)
		return active == 0 && resets+aborted == rounds, fmt.Sprintf("streams_active %v, streams_total reset %v, aborted %v", active, resets, aborted)
	})
	if aborted := d.metric(t, `portforwardd_streams_total{protocol="h2",result="aborted"}`); aborted != 0 {
		t.Errorf("%v of %d client resets counted as aborted (the daemon's session ending), want reset", aborted, rounds)
	}
}

// TestH2LimitsStreamsAndHeaders: an HTTP/2 connection is held to
// --max-streams-per-session concurrent streams (advertised in SETTINGS, a
// stream beyond it refused with RST_STREAM while the others forward on)
// and to --max-header-bytes of request headers (431).
func TestH2LimitsStreamsAndHeaders(t *testing.T) {
	const maxStreams = 3
	d := startDaemon(t, "--max-streams-per-session", strconv.Itoa(maxStreams), "--max-header-bytes", "4Ki")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)

	fr := dialH2Frames(t, d)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	headers := func(id uint32, extra ...hpack.HeaderField) {
		t.Helper()
		hb.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", d.addr}, {":path", rawPath(p, port(ln))}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		for _, f := range extra {
			enc.WriteField(f)
		}
		// One HEADERS frame and CONTINUATIONs of at most 16 KiB each.
		block := hb.Bytes()
		first := block[:min(len(block), 16<<10)]
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndHeaders: len(first) == len(block)}); err != nil {
			t.Fatal(err)
		}
		for rest := block[len(first):]; len(rest) > 0; {
			chunk := rest[:min(len(rest), 16<<10)]
			rest = rest[len(chunk):]
			if err := fr.WriteContinuation(id, len(rest) == 0, chunk); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The daemon's SETTINGS, acknowledged, and their ACK of ours.
	advertised, acked := -1, false
	for advertised < 0 || !acked {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok {
			if s.IsAck() {
				acked = true
				continue
			}
			advertised = 0
			if v, ok := s.Value(http2.SettingMaxConcurrentStreams); ok {
				advertised = int(v)
			}
			fr.WriteSettingsAck()
		}
	}
	if advertised != maxStreams {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want %d", advertised, maxStreams)
	}

	// status reads frames until stream id gets its response headers or is
	// reset: the status, or -1 and the reset's code.
	dec := hpack.NewDecoder(4096, nil)
	status := func(id uint32) (int, http2.ErrCode) {
		t.Helper()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("read frame: %v", err)
			}
			switch f := f.(type) {
			case *http2.HeadersFrame:
				fields, err := dec.DecodeFull(f.HeaderBlockFragment())
				if err != nil {
					t.Fatal(err)
				}
				if f.StreamID == id {
					for _, hf := range fields {
						if hf.Name == ":status" {
							n, _ := strconv.Atoi(hf.Value)
							return n, 0
						}
					}
				}
			case *http2.RSTStreamFrame:
				if f.StreamID == id {
					return -1, f.ErrCode
				}
			case *http2.GoAwayFrame:
				t.Fatalf("GOAWAY %v while waiting for stream %d", f.ErrCode, id)
			}
		}
	}
	// maxStreams streams forward; the next one is refused.
	for i := range maxStreams {
		id := uint32(2*i + 1)
		headers(id)
		if code, _ := status(id); code != http.StatusOK {
			t.Fatalf("stream %d: status %d, want 200", id, code)
		}
	}
	over := uint32(2*maxStreams + 1)
	headers(over)
	if code, errCode := status(over); code != -1 || (errCode != http2.ErrCodeRefusedStream && errCode != http2.ErrCodeProtocol) {
		t.Fatalf("stream %d beyond the limit of %d: status %d, reset %v; want it reset (REFUSED_STREAM)", over, maxStreams, code, errCode)
	}
	// The open streams still forward.
	if err := fr.WriteData(1, false, []byte("still")); err != nil {
		t.Fatal(err)
	}
	for got := ""; got != "still"; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		if df, ok := f.(*http2.DataFrame); ok && df.StreamID == 1 {
			got += string(df.Data())
		}
	}
	// A stream that ends frees its place.
	if err := fr.WriteRSTStream(3, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	next := over + 2
	headers(next)
	if code, errCode := status(next); code != http.StatusOK {
		t.Fatalf("stream %d after one ended: status %d, reset %v; want 200", next, code, errCode)
	}
	// Request headers over --max-header-bytes.
	if err := fr.WriteRSTStream(5, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	big := next + 2
	// (Many fields: one field longer than the limit is a COMPRESSION_ERROR
	// for Go's server, which ends the connection.)
	var many []hpack.HeaderField
	for i := range 16 {
		many = append(many, hpack.HeaderField{Name: fmt.Sprintf("x-big-%d", i), Value: strings.Repeat("a", 512), Sensitive: true})
	}
	headers(big, many...)
	if code, errCode := status(big); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("8 KiB of headers: status %d, reset %v; want 431", code, errCode)
	}
	// And the connection goes on.
	if err := fr.WriteData(1, false, []byte("again")); err != nil {
		t.Fatal(err)
	}
	for got := ""; got != "again"; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		if df, ok := f.(*http2.DataFrame); ok && df.StreamID == 1 {
			got += string(df.Data())
		}
	}
}

// dialH2Frames opens an h2c connection to the daemon by hand: the preface
// and empty SETTINGS (the defaults) are sent, and the framer reads and
// writes it; the connection closes with the test and has 30 s to finish.
func dialH2Frames(t *testing.T, d *daemon) *http2.Framer {
	t.Helper()
	c, err := net.Dial("tcp4", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return fr
}

// TestH2ConnectionCutMidStreamFreesItsMemory: an HTTP/2 connection that
// its client drops while a stream moves bytes leaves nothing behind once
// its session has ended. With http.Server's IdleTimeout set, Go's HTTP/2
// server re-arms the connection's idle timer as it closes the streams of
// a connection that is gone, and the timer kept the whole connection (its
// 1 MiB frame read buffer, the stream's queued writes and the daemon's
// copy buffers in them) for the idle timeout, 90 s: a client dropping
// bulk streams made the daemon hold megabytes per connection that no
// session or limit counted, and the memory came back minutes after the
// last session, not within a second.
func TestH2ConnectionCutMidStreamFreesItsMemory(t *testing.T) {
	d := startDaemon(t, "--pprof") // the heap profile's gc=1 collects
	ep := newEchoPod(t)
	heapMiB := func() float64 {
		d.collectGarbage(t)
		return d.metric(t, "go_memstats_heap_inuse_bytes") / (1 << 20)
	}
	const conns = 40
	cut := func() {
		for range conns {
			var conn net.Conn
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			tr := &http.Transport{Protocols: &p, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				conn = c
				return c, err
			}}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			pr, pw := io.Pipe()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, h2URL(d, ep.pod, ep.port), pr)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			go pw.Write(make([]byte, 4<<20))
			// Bulk both ways: the daemon's copies run with their 1 MiB
			// buffers, and the client sends frames as large as allowed.
			if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
				t.Fatalf("echo: %v", err)
			}
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
			cancel()
			pw.Close()
		}
		eventually(t, 30*time.Second, func() (bool, string) {
			s := d.metricSum(t, "portforwardd_sessions_active")
			return s == 0, fmt.Sprintf("sessions_active %v after the connections were cut", s)
		})
	}
	// The idle state, after streams that ended cleanly.
	for i := range 4 {
		resp, pw := openH2Stream(t, d, ep.pod, ep.port)
		echoThrough(t, pw, resp.Body, fmt.Sprint("warm-up ", i))
		pw.Close()
		io.Copy(io.Discard, resp.Body)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		s := d.metricSum(t, "portforwardd_sessions_active")
		return s == 0, fmt.Sprintf("sessions_active %v after the warm-up", s)
	})
	base := heapMiB()
	cut()
	var heap float64
	eventually(t, 15*time.Second, func() (bool, string) {
		heap = heapMiB()
		return heap <= base+4, fmt.Sprintf("heap in use %.1f MiB after %d connections were cut mid-stream and their sessions ended, %.1f MiB before", heap, conns, base)
	})
	t.Logf("heap in use %.1f MiB before, %.1f MiB after %d connections cut mid-stream", base, heap, conns)
}

// TestH2PodEndsFirstIsOK: a pod that ends its side first (its FIN) while
// the client's upload is still open ends the stream cleanly: the client
// reads the pod's bytes and the response's end, the pod gets the client's
// bytes and then its FIN, and the forward counts as ok, not as a reset
// (the daemon closes the request body itself when the response ends, and
// that close is no reset by the client).
func TestH2PodEndsFirstIsOK(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	const rounds = 5
	podGot := make(chan string, rounds)
	serveEach(ln, func(c *net.TCPConn) {
		hello := make([]byte, len("hello"))
		io.ReadFull(c, hello)
		io.WriteString(c, "bye")
		c.CloseWrite()
		rest, err := io.ReadAll(c) // until the daemon's FIN
		podGot <- fmt.Sprintf("%s+%q, %v", hello, rest, err)
	})
	client := h2Client()
	defer client.CloseIdleConnections()
	for i := range rounds {
		resp, pw := openH2StreamOn(t, client, d, p, port(ln))
		go pw.Write([]byte("hello")) // and the upload stays open
		got, err := io.ReadAll(resp.Body)
		if err != nil || string(got) != "bye" {
			t.Fatalf("round %d: client read %q, %v; want \"bye\" and a clean end", i, got, err)
		}
		select {
		case g := <-podGot:
			if want := `hello+"", <nil>`; g != want {
				t.Fatalf("round %d: pod got %s, want %s (the client's bytes, then a FIN)", i, g, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the pod got no FIN within 10 s of its own", i)
		}
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		active := d.metric(t, `portforwardd_streams_active{protocol="h2"}`)
		ok := d.metric(t, `portforwardd_streams_total{protocol="h2",result="ok"}`)
		reset := d.metric(t, `portforwardd_streams_total{protocol="h2",result="reset"}`)
		return active == 0 && ok+reset == rounds, fmt.Sprintf("streams_active %v, streams_total ok %v, reset %v", active, ok, reset)
	})
	if reset := d.metric(t, `portforwardd_streams_total{protocol="h2",result="reset"}`); reset != 0 {
		t.Errorf("%v of %d forwards the pod ended first counted as reset, want ok", reset, rounds)
	}
}

// TestH2ClientResetWhilePodTakesNothing: a client that resets its stream
// (RST_STREAM CANCEL) while the daemon's write of its upload waits on a
// pod that reads nothing ends the forward at once, as a reset: the
// daemon does not read the request body then, so only the request's end
// tells it, and the pod's connection, the stream and its --max-sessions
// slot were otherwise held until the pod read.
func TestH2ClientResetWhilePodTakesNothing(t *testing.T) {
	d := startDaemon(t, "--stream-buffer-bytes", "32Mi")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	podEnd := make(chan error, 1)
	serveEach(ln, func(c *net.TCPConn) {
		<-release // reads nothing until the end of the test
		_, err := io.Copy(io.Discard, c)
		podEnd <- err
	})

	fr := dialH2Frames(t, d)
	// The daemon's windows: 32 MiB for the stream (SETTINGS), 64 MiB for
	// the connection (a WINDOW_UPDATE on stream 0).
	var streamWindow, connWindow uint32 = 0, 65535
	for streamWindow == 0 || connWindow == 65535 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				v, _ := f.Value(http2.SettingInitialWindowSize)
				streamWindow = v
				fr.WriteSettingsAck()
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				connWindow += f.Increment
			}
		}
	}
	// An upload of half the stream's window, more than the pod's socket
	// buffers hold: the daemon reads what they take (its WINDOW_UPDATEs
	// say so), and its write to the pod then waits with the rest of the
	// upload in the stream's window, unread.
	upload := int(streamWindow / 2)
	if upload < 8<<20 || uint32(upload) > connWindow {
		t.Fatalf("windows: stream %d, connection %d; want the stream's 32 MiB within the connection's", streamWindow, connWindow)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", d.addr}, {":path", rawPath(p, port(ln))}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	frames := make(chan http2.Frame)
	readErr := make(chan error, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				readErr <- err
				return
			}
			frames <- f
		}
	}()
	chunk := make([]byte, 16<<10)
	for n := 0; n < upload; n += len(chunk) {
		if err := fr.WriteData(1, false, chunk); err != nil {
			t.Fatal(err)
		}
	}
	// The daemon has taken all it can once no WINDOW_UPDATE for the
	// stream has come for a while, with most of the upload left.
	taken := 0 // what the daemon read of the body
	for quiet := time.NewTimer(time.Second); ; {
		select {
		case f := <-frames:
			switch f := f.(type) {
			case *http2.WindowUpdateFrame:
				if f.StreamID == 1 {
					taken += int(f.Increment)
					quiet.Reset(time.Second)
				}
			case *http2.RSTStreamFrame:
				t.Fatalf("stream reset by the daemon (%v) with %d of %d bytes taken", f.ErrCode, taken, upload)
			}
			continue
		case err := <-readErr:
			t.Fatalf("read frame: %v (%d of %d bytes taken)", err, taken, upload)
		case <-quiet.C:
		}
		break
	}
	if taken == 0 || taken > upload-(1<<20) {
		t.Fatalf("the daemon took %d of %d bytes for a pod that reads nothing; want its write to the pod waiting", taken, upload)
	}
	go func() { // the daemon's answers, unread from here on
		for range frames {
		}
	}()
	if err := fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		active := d.metric(t, `portforwardd_streams_active{protocol="h2"}`)
		resets := d.metric(t, `portforwardd_streams_total{protocol="h2",result="reset"}`)
		return active == 0 && resets == 1, fmt.Sprintf("streams_active %v, streams_total reset %v after the client's reset, %d bytes taken, the pod reading nothing",
			active, resets, taken)
	})
}
