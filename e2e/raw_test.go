package e2e

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dialRaw performs the connect-tcp upgrade by hand. On a 101 it returns
// the connection, now carrying the forwarded bytes; otherwise the response.
func dialRaw(t *testing.T, d *daemon, path string) (*net.TCPConn, *http.Response, string) {
	t.Helper()
	c, br, resp := upgradeConnectTCP(t, d, path)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		return nil, resp, string(body)
	}
	if br.Buffered() > 0 {
		t.Fatal("bytes buffered behind the 101")
	}
	return c, resp, ""
}

// dialConnectTCP performs the connect-tcp upgrade, which must succeed, and
// returns the connection and a reader of the forwarded bytes, which may
// have arrived in the same segment as the 101 (a pod that speaks first).
func dialConnectTCP(t *testing.T, d *daemon, path string) (*net.TCPConn, io.Reader) {
	t.Helper()
	c, br, resp := upgradeConnectTCP(t, d, path)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("connect-tcp upgrade: %s", resp.Status)
	}
	return c, br
}

// upgradeConnectTCP sends a connect-tcp upgrade for path and reads the
// answer; a 101 must name connect-tcp.
func upgradeConnectTCP(t *testing.T, d *daemon, path string) (*net.TCPConn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp4", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n", path)
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read upgrade response: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	if resp.StatusCode == http.StatusSwitchingProtocols && resp.Header.Get("Upgrade") != "connect-tcp" {
		t.Fatalf("101 with Upgrade %q", resp.Header.Get("Upgrade"))
	}
	return c.(*net.TCPConn), br, resp
}

func rawPath(p *pod, port int) string { return p.route() + "?port=" + strconv.Itoa(port) }

// TestRawKubernetesScenarios runs the Kubernetes e2e cases over the raw
// upgrade, with the pod bound to 127.0.0.1 and to 0.0.0.0.
func TestRawKubernetesScenarios(t *testing.T) {
	d := startDaemon(t)
	for _, bm := range bindModes {
		t.Run(bm.name+"/no data", func(t *testing.T) {
			p := newPod(t)
			ln := p.listen(t, "tcp4", bm.addr)
			logs := runTester(ln, testerConfig{expected: "abc", chunks: 1, chunkSize: 1})
			c, _, _ := dialRaw(t, d, rawPath(p, port(ln)))
			c.Close()
			want := []string{"Accepted client connection", "Expected to read 3 bytes from client, but got 0 instead. err=EOF"}
			if got := collect(t, logs); !slices.Equal(got, want) {
				t.Fatalf("tester log %q, want %q", got, want)
			}
		})
		t.Run(bm.name+"/data", func(t *testing.T) {
			p := newPod(t)
			ln := p.listen(t, "tcp4", bm.addr)
			logs := runTester(ln, testerConfig{expected: "abc", chunks: 10, chunkSize: 10, interval: 10 * time.Millisecond})
			c, _, _ := dialRaw(t, d, rawPath(p, port(ln)))
			c.Write([]byte("abc"))
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			got, err := io.ReadAll(c) // the pod's FIN arrives while we can still write
			if err != nil || string(got) != strings.Repeat("x", 100) {
				t.Fatalf("read %q, %v; want 100 'x'; tester log %q", got, err, collect(t, logs))
			}
			c.CloseWrite()
			if log := collect(t, logs); !slices.Contains(log, "Received expected client data") || !slices.Contains(log, "Done") {
				t.Fatalf("tester log %q", log)
			}
		})
	}
}

// TestRawBulkIsSpliced moves 1 GiB each way with sha256 and checks that
// the daemon did not copy the bytes through user space: its read and write
// syscalls (rchar, wchar in /proc/PID/io) move far less than the data.
func TestRawBulkIsSpliced(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // echo: both directions at once
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	rchar0, wchar0 := d.ioChars(t)
	c, _, body := dialRaw(t, d, rawPath(p, port(ln)))
	if c == nil {
		t.Fatalf("upgrade refused: %s", body)
	}
	src, want := randomStream(gib)
	go func() {
		io.Copy(c, src)
		c.CloseWrite()
	}()
	n, sum, err := hashAll(c)
	if err != nil || n != gib || sum != want() {
		t.Fatalf("echoed %d bytes (err %v), sha256 match %v", n, err, sum == want())
	}
	rchar1, wchar1 := d.ioChars(t)
	// 2 GiB crossed the daemon (1 GiB each way).
	if moved := (rchar1 - rchar0) + (wchar1 - wchar0); moved > 64<<20 {
		t.Fatalf("the daemon read+wrote %d MiB through user space for 2 GiB forwarded: not spliced", moved>>20)
	}
	t.Logf("user-space copies for 2 GiB forwarded: rchar %d KiB, wchar %d KiB", (rchar1-rchar0)>>10, (wchar1-wchar0)>>10)
}

func TestRawErrors(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	closed := p.listen(t, "tcp4", "127.0.0.1:0")
	dead := port(closed)
	closed.Close()
	tests := []struct {
		name   string
		path   string
		status int
		want   string
	}{
		{"nothing listening", rawPath(p, dead), http.StatusBadGateway,
			fmt.Sprintf("error forwarding port %d to pod %s/%s, uid : ", dead, p.namespace, p.name)},
		{"no port", p.route(), http.StatusBadRequest, `query parameter "port" is required`},
		{"two ports", p.route() + "?port=80,81", http.StatusBadRequest, "a connect-tcp or HTTP/2 stream forwards exactly one port"},
		{"bad port", p.route() + "?port=0", http.StatusBadRequest, `port "0" must be > 0`},
		{"unknown pod", "/portForward/default/nope?port=80", http.StatusNotFound, "pod does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, resp, body := dialRaw(t, d, tt.path)
			if c != nil {
				t.Fatal("upgraded")
			}
			if resp.StatusCode != tt.status || !strings.HasPrefix(body, tt.want) {
				t.Fatalf("got %d %q, want %d %q…", resp.StatusCode, body, tt.status, tt.want)
			}
		})
	}
}

// ioChars reads the daemon's rchar and wchar: bytes passed through read
// and write system calls.
func (d *daemon) ioChars(t *testing.T) (rchar, wchar int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "rchar":
			rchar = n
		case "wchar":
			wchar = n
		}
	}
	return rchar, wchar
}

// TestOptionsNamesTransports: OPTIONS on a pod's route says, after
// authentication and the pod lookup, which transports the daemon offers
// (what portforward --transport auto reads); nothing is dialed.
func TestOptionsNamesTransports(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	for path, want := range map[string]int{p.route(): http.StatusNoContent, "/portForward/" + p.namespace + "/nope": http.StatusNotFound} {
		req, _ := http.NewRequest(http.MethodOptions, d.url(path), nil)
		resp, err := scrapeClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("OPTIONS %s: %d, want %d", path, resp.StatusCode, want)
		}
		if want == http.StatusNoContent && resp.Header.Get("Portforwardd-Transports") != "connect-tcp, h2, websocket-spdy, spdy, websocket-v4" {
			t.Errorf("Portforwardd-Transports: %q", resp.Header.Get("Portforwardd-Transports"))
		}
	}
	if n := d.metric(t, `portforwardd_dial_duration_seconds_count`); n != 0 {
		t.Errorf("%v dials for OPTIONS, want 0", n)
	}
}

// TestRawRequestDataAndFINTogether: a client may send its request, its
// bytes and its FIN at once (a one-shot request to a pod). The FIN reaches
// the pod as a FIN after the bytes, the pod's answer comes back, and the
// bytes sent behind the request are counted. net/http's own read of the
// connection sees the FIN before the handler has dialed; it must not
// cancel the dial. Repeated, as the race is a matter of timing.
func TestRawRequestDataAndFINTogether(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEach(ln, func(c *net.TCPConn) {
		got, _ := io.ReadAll(c) // until the client's FIN
		c.Write(append([]byte("pong:"), got...))
	})
	const rounds = 20
	for i := range rounds {
		c, err := net.Dial("tcp4", d.addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\nping", rawPath(p, port(ln)))
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("round %d: %s %q, want 101", i, resp.Status, body)
		}
		got, err := io.ReadAll(br)
		c.Close()
		if err != nil || string(got) != "pong:ping" {
			t.Fatalf("round %d: pod answered %q, %v; want \"pong:ping\"", i, got, err)
		}
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		up := d.metric(t, `portforwardd_bytes_total{direction="client_to_pod",protocol="raw"}`)
		return up == 4*rounds, fmt.Sprintf("bytes_total client_to_pod %v, want %d", up, 4*rounds)
	})
	if n := d.metric(t, `portforwardd_dial_errors_total{reason="canceled"}`); n != 0 {
		t.Errorf("%v dials canceled", n)
	}
}

// TestRawTLSPodResetIsAReset: over TLS, where the bytes are not spliced,
// a pod's reset still reaches the client as a reset, not as TLS's clean
// end (close_notify), which would read as a finished transfer.
func TestRawTLSPodResetIsAReset(t *testing.T) {
	pk := newPKI(t)
	d := startDaemon(t, pk.daemonArgs()...)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveReset(ln, "partial")
	alice := pk.clientCA.Client(t, "alice", "ops")
	c, err := tls.Dial("tcp4", d.addr, &tls.Config{RootCAs: pk.serverCA.Pool(), Certificates: []tls.Certificate{alice.TLS}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n", rawPath(p, port(ln)))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade over TLS: %v, %v", resp, err)
	}
	got := make([]byte, len("partial"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "partial" {
		t.Fatalf("read %q, %v; want \"partial\"", got, err)
	}
	io.WriteString(c, "x")
	if rest, err := io.ReadAll(br); err == nil {
		t.Fatalf("read %q and a clean end; want the pod's reset", rest)
	}
}

// TestRawBytesCountedWhileForwarding: bytes_total counts a raw transfer
// while it runs (every 64 MiB), not only when its direction ends, and the
// whole of it at the end.
func TestRawBytesCountedWhileForwarding(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	const size = 256 << 20
	release := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, io.LimitReader(zeros{}, size))
		<-release // the connection stays open: the direction has not ended
	}()
	_, c := dialConnectTCP(t, d, rawPath(p, port(ln))) // the pod speaks first
	if n, err := io.CopyN(io.Discard, c, size); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	const series = `portforwardd_bytes_total{direction="pod_to_client",protocol="raw"}`
	eventually(t, 10*time.Second, func() (bool, string) {
		got := d.metric(t, series)
		return got >= size-spliceCountE2E, fmt.Sprintf("%s = %v while the connection is open, want at least %d", series, got, size-spliceCountE2E)
	})
	close(release)
	if n, err := io.Copy(io.Discard, c); err != nil || n != 0 {
		t.Fatalf("after the pod's end: %d more bytes, err %v", n, err)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		got := d.metric(t, series)
		return got == size, fmt.Sprintf("%s = %v after the end, want %d", series, got, size)
	})
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// spliceCountE2E is streams.spliceCount: how far behind a running raw
// transfer bytes_total may be.
const spliceCountE2E = 64 << 20

// TestRawClientGoneWhilePodSilent: a client that half-closes and then
// resets, or resets while its pod does not read, is noticed although
// neither direction reads or writes its socket any more: the pod's
// connection is closed, and the session ends, while the pod stays silent.
// The daemon held both sockets and the session until the pod spoke.
func TestRawClientGoneWhilePodSilent(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	for _, tc := range []struct {
		name   string
		before func(c *net.TCPConn)
	}{
		{"after its FIN", func(c *net.TCPConn) { c.CloseWrite() }},
		{"while the pod does not read", func(c *net.TCPConn) {
			c.SetWriteBuffer(64 << 10)
			c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
			io.Copy(c, zeros{}) // until every buffer on the way is full
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := p.listen(t, "tcp4", "127.0.0.1:0")
			accepted := acceptOne(t, ln) // silent: never reads, never writes
			c, _ := dialConnectTCP(t, d, rawPath(p, port(ln)))
			var pc net.Conn
			select {
			case pc = <-accepted:
			case <-time.After(10 * time.Second):
				t.Fatal("the pod was not dialed")
			}
			pc.(*net.TCPConn).SetReadBuffer(64 << 10)
			tc.before(c)
			c.SetLinger(0)
			c.Close() // a reset

			// The session ends while the pod neither reads nor writes,
			eventually(t, 10*time.Second, func() (bool, string) {
				n := d.metric(t, `portforwardd_sessions_active{protocol="raw"}`)
				return n == 0, fmt.Sprintf("raw sessions_active %v after the client reset, the pod silent", n)
			})
			// and the pod's connection is closed (after what the client
			// sent).
			pc.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.Copy(io.Discard, pc)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the pod's connection is still open after the session ended")
			}
		})
	}
}

// TestRawTLSPeerGoneWhileOtherSilent: over TLS, where the bytes are pumped,
// not spliced, a client or a pod that half-closes and then resets, or
// resets while the other does not read, is noticed although neither
// direction reads or writes its socket any more: the session ends, and
// the other peer's connection is closed, while that peer stays silent.
// The daemon held both sockets and the session until the silent peer
// spoke.
func TestRawTLSPeerGoneWhileOtherSilent(t *testing.T) {
	pk := newPKI(t)
	d := startDaemon(t, pk.daemonArgs()...)
	p := newPod(t)
	alice := pk.clientCA.Client(t, "alice", "ops")
	fill := func(c *net.TCPConn, w io.Writer) {
		c.SetWriteBuffer(64 << 10)
		c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		io.Copy(w, zeros{}) // until every buffer on the way is full
	}
	for _, tc := range []struct {
		name string
		// client: the client resets, after before; otherwise the pod.
		client bool
		before func(tc *tls.Conn, c *net.TCPConn)
	}{
		{"client after its FIN", true, func(tc *tls.Conn, c *net.TCPConn) { c.CloseWrite() }},
		{"client while the pod does not read", true, func(tc *tls.Conn, c *net.TCPConn) { fill(c, tc) }},
		{"pod after its FIN", false, func(_ *tls.Conn, c *net.TCPConn) { c.CloseWrite() }},
		{"pod while the client does not read", false, func(_ *tls.Conn, c *net.TCPConn) { fill(c, c) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := p.listen(t, "tcp4", "127.0.0.1:0")
			accepted := make(chan *net.TCPConn, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.(*net.TCPConn).SetReadBuffer(64 << 10)
				accepted <- c.(*net.TCPConn) // silent unless it is the one to reset
			}()
			c, err := tls.Dial("tcp4", d.addr, &tls.Config{RootCAs: pk.serverCA.Pool(), Certificates: []tls.Certificate{alice.TLS}, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			raw := c.NetConn().(*net.TCPConn)
			raw.SetReadBuffer(64 << 10)
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n", rawPath(p, port(ln)))
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade over TLS: %v, %v", resp, err)
			}
			c.SetReadDeadline(time.Time{})
			var pc *net.TCPConn
			select {
			case pc = <-accepted:
			case <-time.After(10 * time.Second):
				t.Fatal("the pod was not dialed")
			}
			defer pc.Close()
			gone, other := raw, io.Reader(pc)
			if tc.client {
				tc.before(c, raw)
			} else {
				tc.before(c, pc)
				gone, other = pc, br
			}
			gone.SetLinger(0)
			gone.Close() // a reset

			// The session ends while the other peer neither reads nor
			// writes,
			eventually(t, 10*time.Second, func() (bool, string) {
				n := d.metric(t, `portforwardd_sessions_active{protocol="raw"}`)
				return n == 0, fmt.Sprintf("raw sessions_active %v after a peer reset, the other silent", n)
			})
			// and the other peer's connection is closed (after what the
			// one gone sent).
			pc.SetReadDeadline(time.Now().Add(10 * time.Second))
			raw.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = io.Copy(io.Discard, other)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the other peer's connection is still open after the session ended")
			}
		})
	}
}

// dialRawTLS performs the connect-tcp upgrade over TLS as alice, which
// must succeed, and returns the TLS connection, its TCP connection and a
// reader of the forwarded bytes.
func dialRawTLS(t *testing.T, d *daemon, pk *pki, path string) (*tls.Conn, *net.TCPConn, *bufio.Reader) {
	t.Helper()
	alice := pk.clientCA.Client(t, "alice", "ops")
	c, err := tls.Dial("tcp4", d.addr, &tls.Config{RootCAs: pk.serverCA.Pool(), Certificates: []tls.Certificate{alice.TLS}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n", path)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade over TLS: %v, %v", resp, err)
	}
	c.SetReadDeadline(time.Time{})
	return c, c.NetConn().(*net.TCPConn), br
}

// TestRawTLSAbortResetsPod: over TLS, where the bytes are pumped, not
// spliced, a forward that ends by a client's reset or by the idle timeout
// resets the pod's connection too, as on plain raw (PROTOCOL.md: a reset
// on either side resets the other, SO_LINGER 0). A FIN would read to the
// pod as the client's orderly end: an upload cut short taken for whole.
func TestRawTLSAbortResetsPod(t *testing.T) {
	const idle = 2 * time.Second
	pk := newPKI(t)
	d := startDaemon(t, append(pk.daemonArgs(), "--stream-idle-timeout", idle.String())...)
	p := newPod(t)
	for _, tc := range []struct {
		name string
		cut  func(c *net.TCPConn) // what the client does once the pod has its bytes
	}{
		{"client reset", func(c *net.TCPConn) { c.SetLinger(0); c.Close() }},
		{"idle timeout", func(*net.TCPConn) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := p.listen(t, "tcp4", "127.0.0.1:0")
			accepted := acceptOne(t, ln)
			c, raw, _ := dialRawTLS(t, d, pk, rawPath(p, port(ln)))
			var pc net.Conn
			select {
			case pc = <-accepted:
			case <-time.After(10 * time.Second):
				t.Fatal("the pod was not dialed")
			}
			if _, err := io.WriteString(c, "partial"); err != nil {
				t.Fatal(err)
			}
			pc.SetReadDeadline(time.Now().Add(30 * time.Second))
			got := make([]byte, len("partial"))
			if _, err := io.ReadFull(pc, got); err != nil {
				t.Fatalf("pod read %q, %v; want \"partial\"", got, err)
			}
			tc.cut(raw)
			rest, err := io.ReadAll(pc)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("pod after the forward was cut: read %q, %v; want a reset, not the client's end", rest, err)
			}
		})
	}
}

// TestRawForwardOutlivesTheReadHeaderTimeout: a connect-tcp forward, over
// plain TCP (spliced) and over TLS (pumped), carries bytes both ways long
// after --read-header-timeout, which bounds only the request's headers and
// the client's taking of the 101: the deadlines the 101 was written under
// are not the forward's.
func TestRawForwardOutlivesTheReadHeaderTimeout(t *testing.T) {
	const headerTimeout = 500 * time.Millisecond
	pk := newPKI(t)
	plain := startDaemon(t, "--read-header-timeout", headerTimeout.String())
	overTLS := startDaemon(t, append(pk.daemonArgs(), "--read-header-timeout", headerTimeout.String())...)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	for _, tc := range []struct {
		name string
		dial func() (io.ReadWriter, func(time.Time) error)
	}{
		{"plain", func() (io.ReadWriter, func(time.Time) error) {
			c, br := dialConnectTCP(t, plain, rawPath(p, port(ln)))
			return struct {
				io.Reader
				io.Writer
			}{br, c}, c.SetReadDeadline
		}},
		{"tls", func() (io.ReadWriter, func(time.Time) error) {
			c, _, br := dialRawTLS(t, overTLS, pk, rawPath(p, port(ln)))
			return struct {
				io.Reader
				io.Writer
			}{br, c}, c.SetReadDeadline
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rw, setDeadline := tc.dial()
			setDeadline(time.Now().Add(30 * time.Second))
			start := time.Now()
			for i := 0; time.Since(start) < 4*headerTimeout; i++ {
				msg := fmt.Sprintf("ping %d", i)
				if _, err := io.WriteString(rw, msg); err != nil {
					t.Fatalf("write %q after %v: %v", msg, time.Since(start).Round(time.Millisecond), err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(rw, got); err != nil || string(got) != msg {
					t.Fatalf("echo of %q after %v: %q, %v (--read-header-timeout %v)", msg, time.Since(start).Round(time.Millisecond), got, err, headerTimeout)
				}
				time.Sleep(50 * time.Millisecond) // a paced exchange, not a burst
			}
		})
	}
}
