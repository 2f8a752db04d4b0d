package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/portforward"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

// dialSPDY upgrades a connection with client-go's SPDY dialer and returns
// the raw stream connection, for tests that open streams by hand.
func dialSPDY(t *testing.T, d *daemon, route string) streamhttp.Connection {
	t.Helper()
	conn, proto, err := spdyDialer(t, d, route).Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		t.Fatalf("SPDY upgrade: %v", err)
	}
	if proto != portforward.PortForwardProtocolV1Name {
		t.Fatalf("negotiated %q, want %q", proto, portforward.PortForwardProtocolV1Name)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func streamHeaders(typ, port, requestID string) http.Header {
	h := http.Header{}
	h.Set("streamType", typ)
	if port != "" {
		h.Set("port", port)
	}
	h.Set("requestID", requestID)
	return h
}

// TestBadPortHeaderResetsOnlyThatStream: a stream with a bad port header is
// reset; the session goes on serving pairs.
func TestBadPortHeaderResetsOnlyThatStream(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	conn := dialSPDY(t, d, p.route())
	for _, bad := range []string{"", "abc", "0", "70000", "-1"} {
		if _, err := conn.CreateStream(streamHeaders("data", bad, "1")); err == nil {
			t.Errorf("stream with port %q was accepted, want it reset", bad)
		}
	}
	errs, err := conn.CreateStream(streamHeaders("error", fmt.Sprint(port(ln)), "2"))
	if err != nil {
		t.Fatalf("error stream after bad streams: %v", err)
	}
	errs.Close()
	data, err := conn.CreateStream(streamHeaders("data", fmt.Sprint(port(ln)), "2"))
	if err != nil {
		t.Fatalf("data stream after bad streams: %v", err)
	}
	data.Write([]byte("alive"))
	data.Close()
	got, err := io.ReadAll(data)
	if err != nil || string(got) != "alive" {
		t.Fatalf("echo after bad streams: %q, %v", got, err)
	}
	if msg, _ := io.ReadAll(errs); len(msg) != 0 {
		t.Fatalf("error stream: %q", msg)
	}
	if got := d.metric(t, `portforwardd_streams_total{protocol="spdy",result="rejected"}`); got != 5 {
		t.Errorf("streams_total{result=rejected}: got %v, want 5", got)
	}
}

// rawRequest sends a hand-written request and returns the response status
// line, its headers and body. The connection must then be closed by the
// server (no redirect, no keep-alive after a refused upgrade).
func rawRequest(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", strings.SplitN(req, "\r\n", 2)[0], err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("connection still open after a %d (read: %v)", resp.StatusCode, err)
		}
	}
	return resp, string(body)
}

func TestHTTPAnswers(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	spdyHeaders := "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
	proto := "X-Stream-Protocol-Version: portforward.k8s.io\r\n"
	tests := []struct {
		name       string
		req        string
		status     int
		bodyPrefix string
	}{
		{"unknown pod", "POST /portForward/default/nope HTTP/1.1\r\nHost: x\r\n" + spdyHeaders + proto + "\r\n", 404, "pod does not exist"},
		{"missing protocol header", "POST " + p.route() + " HTTP/1.1\r\nHost: x\r\n" + spdyHeaders + "\r\n", 400,
			"unable to upgrade: header X-Stream-Protocol-Version does not exist"},
		{"unsupported protocol", "POST " + p.route() + " HTTP/1.1\r\nHost: x\r\n" + spdyHeaders + "X-Stream-Protocol-Version: v9.portforward.k8s.io\r\n\r\n", 403,
			"unable to upgrade: unable to negotiate protocol"},
		{"not an upgrade", "GET " + p.route() + " HTTP/1.1\r\nHost: x\r\n" + proto + "\r\n", 400, "unable to upgrade: missing upgrade headers"},
		{"other method", "PUT " + p.route() + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "method not allowed"},
		{"invalid pod name", "POST /portForward/Default/x_y HTTP/1.1\r\nHost: x\r\n" + spdyHeaders + proto + "\r\n", 400, "invalid pod reference"},
		{"unknown route", "GET /exec/default/pod HTTP/1.1\r\nHost: x\r\n\r\n", 404, "404 page not found"},
		{"unclean path, no redirect", "POST /portForward/../portForward/default/x HTTP/1.1\r\nHost: x\r\n" + spdyHeaders + proto + "\r\n", 404, "404 page not found"},
		{"double slash, no redirect", "POST //portForward/default/x HTTP/1.1\r\nHost: x\r\n" + spdyHeaders + proto + "\r\n", 404, "404 page not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawRequest(t, d.addr, tt.req)
			if resp.StatusCode != tt.status || !strings.HasPrefix(body, tt.bodyPrefix) {
				t.Fatalf("got %d %q, want %d %q…", resp.StatusCode, body, tt.status, tt.bodyPrefix)
			}
			if strings.Count(strings.TrimSuffix(body, "\n"), "\n") != 0 {
				t.Errorf("body is not one line: %q", body)
			}
			if tt.status == 403 && resp.Header.Get("X-Accepted-Stream-Protocol-Versions") != "portforward.k8s.io" {
				t.Errorf("403 without X-Accepted-Stream-Protocol-Versions: %v", resp.Header)
			}
		})
	}
	if got := d.metric(t, `portforwardd_upgrade_failures_total{reason="not_found"}`); got != 1 {
		t.Errorf("upgrade_failures_total{reason=not_found}: got %v, want 1", got)
	}
}

// TestUpgradeResponseHeaders checks the 101 header for header against what
// the kubelet sends.
func TestUpgradeResponseHeaders(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	resp, _ := rawRequest(t, d.addr, "POST "+p.route()+" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"+
		"X-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	for k, want := range map[string]string{"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "portforward.k8s.io"} {
		if got := resp.Header.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("%s: got %q, want [%q]", k, got, want)
		}
	}
}

// TestSPDYPodGoneAfterItsFINWhileClientSilent: a pod that sends its bytes
// and its FIN, and then resets, while the client keeps its side of the
// stream open and sends nothing, is noticed although nothing reads or
// writes the pod's socket any more: the stream is reset and counted as
// ended. The daemon held the stream and the pod's socket until the client
// wrote or closed.
func TestSPDYPodGoneAfterItsFINWhileClientSilent(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	resetNow := make(chan struct{})
	serveEach(ln, func(c *net.TCPConn) {
		io.WriteString(c, "bye")
		c.CloseWrite()
		<-resetNow
		c.SetLinger(0) // the deferred close is a reset
	})
	conn := dialSPDY(t, d, p.route())
	errs, err := conn.CreateStream(streamHeaders("error", fmt.Sprint(port(ln)), "1"))
	if err != nil {
		t.Fatal(err)
	}
	defer errs.Close()
	data, err := conn.CreateStream(streamHeaders("data", fmt.Sprint(port(ln)), "1"))
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	if got, err := io.ReadAll(data); err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v; want \"bye\" and the pod's FIN", got, err)
	}
	close(resetNow)
	// The client stays silent; the pod's reset must end the stream.
	eventually(t, 10*time.Second, func() (bool, string) {
		active := d.metric(t, `portforwardd_streams_active{protocol="spdy"}`)
		resets := d.metric(t, `portforwardd_streams_total{protocol="spdy",result="reset"}`)
		return active == 0 && resets == 1, fmt.Sprintf("streams_active %v, streams_total reset %v after the pod reset, the client silent", active, resets)
	})
}
