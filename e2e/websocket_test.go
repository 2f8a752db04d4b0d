package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	streamhttp "k8s.io/streaming/pkg/httpstream"
	streamspdy "k8s.io/streaming/pkg/httpstream/spdy"

	"github.com/portforwardd/portforwardd/streams"
)

// v4Client is a WebSocket v4 channel client, as the Kubernetes e2e test
// and non-Go clients speak it.
type v4Client struct {
	t      *testing.T
	ws     *websocket.Conn
	base64 bool
}

func dialV4(t *testing.T, d *daemon, route string, ports []int, subprotocols ...string) (*v4Client, *http.Response, error) {
	t.Helper()
	return dialV4At(t, d.addr, route, ports, subprotocols...)
}

// dialV4At is dialV4 to the server at addr.
func dialV4At(t *testing.T, addr, route string, ports []int, subprotocols ...string) (*v4Client, *http.Response, error) {
	t.Helper()
	q := url.Values{}
	for _, p := range ports {
		q.Add("port", strconv.Itoa(p))
	}
	u := url.URL{Scheme: "ws", Host: addr, Path: route, RawQuery: q.Encode()}
	dialer := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := dialer.Dial(u.String(), nil)
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { ws.Close() })
	return &v4Client{t: t, ws: ws, base64: ws.Subprotocol() == "v4.base64.channel.k8s.io"}, resp, nil
}

// read returns the next message's channel and payload.
func (c *v4Client) read() (byte, []byte) {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	typ, msg, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatalf("read v4 message: %v", err)
	}
	if len(msg) == 0 {
		c.t.Fatal("empty v4 message")
	}
	if !c.base64 {
		if typ != websocket.BinaryMessage {
			c.t.Fatalf("binary protocol sent message type %d", typ)
		}
		return msg[0], msg[1:]
	}
	if typ != websocket.TextMessage {
		c.t.Fatalf("base64 protocol sent message type %d", typ)
	}
	payload, err := base64.StdEncoding.DecodeString(string(msg[1:]))
	if err != nil {
		c.t.Fatalf("base64 payload %q: %v", msg[1:], err)
	}
	return msg[0] - '0', payload
}

func (c *v4Client) write(ch byte, payload []byte) {
	c.t.Helper()
	var err error
	if c.base64 {
		err = c.ws.WriteMessage(websocket.TextMessage, append([]byte{'0' + ch}, base64.StdEncoding.EncodeToString(payload)...))
	} else {
		err = c.ws.WriteMessage(websocket.BinaryMessage, append([]byte{ch}, payload...))
	}
	if err != nil {
		c.t.Fatalf("write channel %d: %v", ch, err)
	}
}

// closeNormally sends a normal close and reads until the connection ends;
// it returns the error that ended it (the daemon's echo of the close, when
// all goes well).
func (c *v4Client) closeNormally() error {
	c.t.Helper()
	if err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(10*time.Second)); err != nil {
		c.t.Fatal(err)
	}
	c.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
			return err
		}
	}
}

// expectPrefixes checks the port announcements: data then error channel,
// port after port, uint16 little endian.
func (c *v4Client) expectPrefixes(ports ...int) {
	c.t.Helper()
	for i, p := range ports {
		for _, want := range []byte{byte(2 * i), byte(2*i + 1)} {
			ch, payload := c.read()
			if ch != want || len(payload) != 2 || int(binary.LittleEndian.Uint16(payload)) != p {
				c.t.Fatalf("port prefix: got channel %d %v, want channel %d port %d", ch, payload, want, p)
			}
		}
	}
}

// readData reads data messages of channel ch until n bytes have arrived.
func (c *v4Client) readData(ch byte, n int) string {
	c.t.Helper()
	var got []byte
	for len(got) < n {
		gotCh, payload := c.read()
		if gotCh != ch {
			c.t.Fatalf("message on channel %d (%q), want channel %d", gotCh, payload, ch)
		}
		got = append(got, payload...)
	}
	return string(got)
}

func TestWebSocketV4(t *testing.T) {
	d := startDaemon(t)
	for _, mode := range []struct{ name, subprotocol string }{
		{"binary", "v4.channel.k8s.io"},
		{"base64", "v4.base64.channel.k8s.io"},
		{"no subprotocol", ""},
	} {
		t.Run(mode.name, func(t *testing.T) {
			p := newPod(t)
			echo := p.listen(t, "tcp4", "127.0.0.1:0")
			serveEcho(echo)
			greeter := p.listen(t, "tcp4", "0.0.0.0:0")
			go func() {
				c, err := greeter.Accept()
				if err == nil {
					c.Write([]byte("hello from the second port"))
					io.Copy(io.Discard, c)
					c.Close()
				}
			}()
			var protos []string
			if mode.subprotocol != "" {
				protos = []string{mode.subprotocol}
			}
			c, _, err := dialV4(t, d, p.route(), []int{port(echo), port(greeter)}, protos...)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.ws.Subprotocol(); got != mode.subprotocol {
				t.Fatalf("subprotocol: got %q, want %q", got, mode.subprotocol)
			}
			c.expectPrefixes(port(echo), port(greeter))
			if got := c.readData(2, len("hello from the second port")); got != "hello from the second port" {
				t.Fatalf("second port: got %q", got)
			}
			c.write(9, []byte("unknown channel: dropped"))
			c.write(1, []byte("error channel: dropped"))
			c.write(0, []byte("ping through the first port"))
			if got := c.readData(0, len("ping through the first port")); got != "ping through the first port" {
				t.Fatalf("echo: got %q", got)
			}
			proto := map[string]string{"binary": "websocket_v4", "base64": "websocket_v4_base64", "no subprotocol": "websocket_v4"}[mode.name]
			// The binary subtest's session, counted under the same
			// protocol on the same daemon, ends once the daemon has
			// read its client's close, which may be after this one
			// has opened.
			eventually(t, 10*time.Second, func() (bool, string) {
				got := d.metric(t, fmt.Sprintf(`portforwardd_sessions_active{protocol=%q}`, proto))
				return got == 1, fmt.Sprintf("sessions_active{protocol=%s}: got %v, want 1", proto, got)
			})
		})
	}
}

// TestWebSocketV4ErrorChannel: a port nothing listens on gets the
// kubelet's text on its error channel while the other port keeps working.
func TestWebSocketV4ErrorChannel(t *testing.T) {
	d := startDaemon(t)
	for _, subprotocol := range v4Subprotocols {
		t.Run(subprotocol, func(t *testing.T) {
			p := newPod(t)
			closed := p.listen(t, "tcp4", "127.0.0.1:0")
			dead := port(closed)
			closed.Close()
			echo := p.listen(t, "tcp4", "127.0.0.1:0")
			serveEcho(echo)
			c, _, err := dialV4(t, d, p.route(), []int{dead, port(echo)}, subprotocol)
			if err != nil {
				t.Fatal(err)
			}
			c.expectPrefixes(dead, port(echo))
			ch, msg := c.read()
			want := fmt.Sprintf("error forwarding port %d to pod %s/%s, uid : ", dead, p.namespace, p.name)
			if ch != 1 || !strings.HasPrefix(string(msg), want) || !strings.Contains(string(msg), "connection refused") {
				t.Fatalf("got channel %d %q, want channel 1 %q… connection refused", ch, msg, want)
			}
			for i := range 3 {
				m := fmt.Sprintf("still alive %d", i)
				c.write(2, []byte(m))
				if got := c.readData(2, len(m)); got != m {
					t.Fatalf("second port echo: got %q, want %q", got, m)
				}
			}
		})
	}
}

var v4Subprotocols = []string{"v4.channel.k8s.io", "v4.base64.channel.k8s.io"}

// TestWebSocketV4ClosesWhenAllPortsEnd: once every port's pod connection
// has ended the server sends a normal close frame.
func TestWebSocketV4ClosesWhenAllPortsEnd(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("bye"))
			c.Close()
		}
	}()
	c, _, err := dialV4(t, d, p.route(), []int{port(ln)})
	if err != nil {
		t.Fatal(err)
	}
	c.expectPrefixes(port(ln))
	if got := c.readData(0, 3); got != "bye" {
		t.Fatalf("got %q", got)
	}
	c.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, _, err = c.ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after the last port ended: %v, want a close frame 1000", err)
	}
}

// TestWebSocketV4BulkInBoundedMessages: a bulk download arrives intact in
// data messages of at most 128 KiB, however much the daemon reads from the
// pod at once, so the other ports of the WebSocket get their turn.
func TestWebSocketV4BulkInBoundedMessages(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	const size, seed = 16 << 20, 41
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	servePattern(ln, seed, size, 0, nil)
	for _, subprotocol := range v4Subprotocols {
		t.Run(subprotocol, func(t *testing.T) {
			c, _, err := dialV4(t, d, p.route(), []int{port(ln)}, subprotocol)
			if err != nil {
				t.Fatal(err)
			}
			c.expectPrefixes(port(ln))
			h := sha256.New()
			var got, largest, msgs int
			for got < size {
				ch, payload := c.read()
				if ch != 0 {
					t.Fatalf("message on channel %d, want 0", ch)
				}
				h.Write(payload)
				got += len(payload)
				largest = max(largest, len(payload))
				msgs++
			}
			if got != size || [32]byte(h.Sum(nil)) != patternSum(seed, size) {
				t.Fatalf("got %d bytes (want %d), intact: %v", got, size, [32]byte(h.Sum(nil)) == patternSum(seed, size))
			}
			if largest > 128<<10 {
				t.Fatalf("largest data message %d bytes, want at most %d", largest, 128<<10)
			}
			t.Logf("%d MiB in %d messages, the largest %d KiB", size>>20, msgs, largest>>10)
		})
	}
}

// TestWebSocketV4ClientCloseClosesPod: closing the WebSocket closes the
// pod connections.
func TestWebSocketV4ClientCloseClosesPod(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	podSide := acceptOne(t, ln)
	c, _, err := dialV4(t, d, p.route(), []int{port(ln)})
	if err != nil {
		t.Fatal(err)
	}
	c.expectPrefixes(port(ln))
	pc := <-podSide
	defer pc.Close()
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.ws.Close()
	pc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(pc); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("pod connection after the WebSocket closed: %v, want closed", err)
	}
}

func TestWebSocketV4BadPorts(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	tests := []struct{ query, want string }{
		{"", `query parameter "port" is required`},
		{"port=", `query parameter "port" cannot be empty`},
		{"port=abc", `unable to parse "abc" as a port: `},
		{"port=0", `port "0" must be > 0`},
		{"port=65536", `unable to parse "65536" as a port: `},
		{"port=80,x", `unable to parse "80,x" as a port: `},
	}
	for _, subprotocol := range v4Subprotocols {
		for _, tt := range tests {
			u := url.URL{Scheme: "ws", Host: d.addr, Path: p.route(), RawQuery: tt.query}
			_, resp, err := (&websocket.Dialer{Subprotocols: []string{subprotocol}}).Dial(u.String(), nil)
			if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
				t.Errorf("%s ?%s: got %v, want a refused handshake", subprotocol, tt.query, err)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(string(body), tt.want) {
				t.Errorf("%s ?%s: got %d %q, want 400 %q…", subprotocol, tt.query, resp.StatusCode, body, tt.want)
			}
		}
	}
}

// TestWebSocketUnsupportedSubprotocolIsForbidden: a WebSocket offering no
// subprotocol the daemon speaks is refused with 403, as by the kubelet: a
// v4 request by the handshake of x/net/websocket (wsstream), which answers
// a refused subprotocol 403 Forbidden, and a tunnel offering only other
// SPDY/3.1+*.k8s.io protocols by the SPDY negotiation the kubelet's
// tunneling handler replays (403, X-Accepted-Stream-Protocol-Versions:
// portforward.k8s.io). The daemon answered 400. client-go's tunneling
// dialer, the real peer, takes the refusal for an upgrade failure, and its
// fallback dialer tries SPDY (which refuses the protocol with the same
// 403).
func TestWebSocketUnsupportedSubprotocolIsForbidden(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	u := url.URL{Scheme: "ws", Host: d.addr, Path: p.route(), RawQuery: "port=80"}
	for _, tt := range []struct {
		subprotocol string
		accepted    string // X-Accepted-Stream-Protocol-Versions
	}{
		{"channel.k8s.io", ""},
		{"base64.channel.k8s.io", ""},
		{"v5.channel.k8s.io", ""},
		{"SPDY/3.1+v2.portforward.k8s.io", "portforward.k8s.io"},
	} {
		_, resp, err := (&websocket.Dialer{Subprotocols: []string{tt.subprotocol}, HandshakeTimeout: 10 * time.Second}).Dial(u.String(), nil)
		if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
			t.Errorf("subprotocol %s: %v, want a refused handshake", tt.subprotocol, err)
			continue
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Accepted-Stream-Protocol-Versions"); resp.StatusCode != http.StatusForbidden || got != tt.accepted {
			t.Errorf("subprotocol %s: %s, X-Accepted-Stream-Protocol-Versions %q; want 403 Forbidden, %q", tt.subprotocol, resp.Status, got, tt.accepted)
		}
	}
	// client-go's tunneling dialer takes any refusal for an upgrade
	// failure (it reads the text body as an empty Status, so the 403
	// itself is lost in its error), which is what makes its fallback
	// dialer try SPDY.
	cfg := &rest.Config{Host: "http://" + d.addr}
	if _, _, err := tunnelDialerFor(t, cfg, p.route()).Dial("v2.portforward.k8s.io"); !streamhttp.IsUpgradeFailure(err) {
		t.Errorf("client-go's tunnel offering only v2.portforward.k8s.io: %v, want an upgrade failure", err)
	}
	_, _, err := tunnelDialer(t, d, p.route()).Dial("v2.portforward.k8s.io")
	if err == nil || !strings.Contains(err.Error(), "unable to negotiate protocol") {
		t.Errorf("client-go's tunnel falling back to SPDY, offering only v2.portforward.k8s.io: %v, want SPDY's refusal", err)
	}
	if got := d.metric(t, `portforwardd_upgrade_failures_total{reason="protocol"}`); got != 4+1+2 {
		t.Errorf("upgrade_failures_total{reason=protocol}: %v, want %d (four WebSockets, the tunnel, then the tunnel and its SPDY fallback)", got, 4+1+2)
	}
}

// TestWebSocketFallsBackToSPDY: when the WebSocket upgrade is refused,
// kubectl's fallback dialer tries SPDY; both attempts reach the daemon.
func TestWebSocketFallsBackToSPDY(t *testing.T) {
	d := startDaemon(t)
	_, _, err := tunnelDialer(t, d, "/portForward/default/no-such-pod").Dial(portforward.PortForwardProtocolV1Name)
	if err == nil {
		t.Fatal("dial to an unknown pod succeeded")

	}
	if got := d.metric(t, `portforwardd_upgrade_failures_total{reason="not_found"}`); got != 2 {
		t.Fatalf("upgrade_failures_total{reason=not_found}: got %v, want 2 (WebSocket, then SPDY)", got)
	}
}

// TestTunnelIdleTimeout: the idle timeout works through the tunnel.
func TestTunnelIdleTimeout(t *testing.T) {
	d := startDaemon(t, "--stream-idle-timeout", "500ms")
	p := newPod(t)
	u := &url.URL{Scheme: "http", Host: d.addr, Path: p.route()}
	dialer, err := portforward.NewSPDYOverWebsocketDialer(u, &rest.Config{Host: "http://" + d.addr})
	if err != nil {
		t.Fatal(err)
	}
	conn, proto, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
	if err != nil || proto != portforward.PortForwardProtocolV1Name {
		t.Fatalf("tunnel dial: %v, protocol %q", err, proto)
	}
	defer conn.Close()
	// client-go pings every 10 s; with nothing else sent the server closes
	// the tunnel after 500 ms.
	select {
	case <-conn.CloseChan():
	case <-time.After(9 * time.Second):
		t.Fatal("idle tunnel not closed")
	}
}

// TestTunnelPingsKeepSessionAlive builds kubectl's tunnel from client-go's
// parts (gorilla WebSocket, TunnelingConnection, SPDY client with pings),
// pinging every 100 ms: the session outlives several idle timeouts.
func TestTunnelPingsKeepSessionAlive(t *testing.T) {
	const idle = 500 * time.Millisecond
	d := startDaemon(t, "--stream-idle-timeout", idle.String())
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	dialer := websocket.Dialer{Subprotocols: []string{"SPDY/3.1+portforward.k8s.io"}}
	ws, _, err := dialer.Dial("ws://"+d.addr+p.route(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ws.Subprotocol() != "SPDY/3.1+portforward.k8s.io" {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	conn, err := streamspdy.NewClientConnectionWithPings(portforward.NewTunnelingConnection("client", ws), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	select {
	case <-conn.CloseChan():
		t.Fatal("the tunnel closed although the client pinged")
	case <-time.After(4 * idle):
	}
	errs, err := conn.CreateStream(streamHeaders("error", strconv.Itoa(port(ln)), "0"))
	if err != nil {
		t.Fatal(err)
	}
	errs.Close()
	data, err := conn.CreateStream(streamHeaders("data", strconv.Itoa(port(ln)), "0"))
	if err != nil {
		t.Fatal(err)
	}
	data.Write([]byte("alive"))
	data.Close()
	if got, err := io.ReadAll(data); err != nil || string(got) != "alive" {
		t.Fatalf("echo after %v of pings: %q, %v", 4*idle, got, err)
	}
}

// rawWebSocket performs a WebSocket handshake by hand and returns the
// connection for writing arbitrary frames.
func rawWebSocket(t *testing.T, d *daemon, path, protocol string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp4", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: %s\r\n\r\n", path, protocol)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	return c, br
}

// frame encodes a masked client frame (opcode, payload length as given).
func frame(opcode byte, payload []byte, claimedLen uint64) []byte {
	b := []byte{0x80 | opcode}
	switch {
	case claimedLen < 126:
		b = append(b, 0x80|byte(claimedLen))
	case claimedLen <= 0xffff:
		b = append(b, 0x80|126, byte(claimedLen>>8), byte(claimedLen))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, claimedLen)
	}
	b = append(b, 0, 0, 0, 0) // zero mask key: payload as is
	return append(b, payload...)
}

// expectClosed waits for the server to close the connection, and returns
// the close code it sent if any (0 for none).
func expectClosed(t *testing.T, c net.Conn, br *bufio.Reader) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	code := 0
	for {
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(br, hdr); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("server did not close the connection")
			}
			return code
		}
		n := int(hdr[1] & 0x7f)
		switch n {
		case 126:
			var l uint16
			binary.Read(br, binary.BigEndian, &l)
			n = int(l)
		case 127:
			var l uint64
			binary.Read(br, binary.BigEndian, &l)
			n = int(l)
		}
		payload := make([]byte, n)
		io.ReadFull(br, payload)
		if hdr[0]&0x0f == 8 && len(payload) >= 2 {
			code = int(binary.BigEndian.Uint16(payload))
		}
	}
}

// TestWebSocketMalformedInput: bad frames, oversized messages, text in the
// tunnel and handshakes that never finish are closed with bounded memory,
// while another session keeps working.
func TestWebSocketMalformedInput(t *testing.T) {
	d := startDaemon(t, "--read-header-timeout", "500ms")
	p := newPod(t)
	echo := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(echo)
	good, _, err := dialV4(t, d, p.route(), []int{port(echo)})
	if err != nil {
		t.Fatal(err)
	}
	good.expectPrefixes(port(echo))
	rss0 := d.rssMiB(t)
	v4path := fmt.Sprintf("%s?port=%d", p.route(), port(echo))

	t.Run("reserved opcode", func(t *testing.T) {
		c, br := rawWebSocket(t, d, v4path, "v4.channel.k8s.io")
		c.Write(frame(0x3, []byte("x"), 1))
		if code := expectClosed(t, c, br); code != websocket.CloseProtocolError {
			t.Errorf("close code %d, want %d", code, websocket.CloseProtocolError)
		}
	})
	t.Run("oversized message", func(t *testing.T) {
		for range 20 {
			c, br := rawWebSocket(t, d, v4path, "v4.channel.k8s.io")
			c.Write(frame(0x2, []byte{0}, 1<<40)) // claims 1 TiB
			if code := expectClosed(t, c, br); code != websocket.CloseMessageTooBig {
				t.Fatalf("close code %d, want %d", code, websocket.CloseMessageTooBig)
			}
		}
	})
	t.Run("text in the tunnel", func(t *testing.T) {
		c, br := rawWebSocket(t, d, p.route(), "SPDY/3.1+portforward.k8s.io")
		c.Write(frame(0x1, []byte("not spdy"), 8))
		expectClosed(t, c, br)
	})
	t.Run("garbage in the tunnel", func(t *testing.T) {
		c, br := rawWebSocket(t, d, p.route(), "SPDY/3.1+portforward.k8s.io")
		// A SYN_STREAM claiming SPDY version 2: the connection cannot go on.
		junk := []byte("\x80\x02\x00\x01\x00\x00\x00\x0agarbage that is not a SPDY frame")
		c.Write(frame(0x2, junk, uint64(len(junk))))
		expectClosed(t, c, br)
	})
	t.Run("handshake never completed", func(t *testing.T) {
		c, err := net.Dial("tcp4", d.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n", v4path) // no end of headers
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("a half-sent request was not closed by --read-header-timeout")
		}
	})
	t.Run("wrong websocket version", func(t *testing.T) {
		resp, body := rawRequest(t, d.addr, "GET "+v4path+" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(body, "unable to upgrade: websocket: ") ||
			resp.Header.Get("Sec-WebSocket-Version") != "13" {
			t.Errorf("got %d %q, Sec-WebSocket-Version %q; want 400 unable to upgrade: websocket: …, with the version spoken, 13 (RFC 6455 4.4)",
				resp.StatusCode, body, resp.Header.Get("Sec-WebSocket-Version"))
		}
	})

	good.write(0, []byte("the good session is unaffected"))
	if got := good.readData(0, len("the good session is unaffected")); got != "the good session is unaffected" {
		t.Fatalf("good session: %q", got)
	}
	if rss := d.rssMiB(t); rss > rss0+32 {
		t.Errorf("daemon RSS grew from %d to %d MiB on malformed input", rss0, rss)
	}
}

// TestWebSocketV4IdleTimeoutCountsWrites: a download whose client sends
// nothing is not idle. The pod writes a tick every 100 ms for 2 s under a
// 500 ms idle timeout; every tick arrives, as with the kubelet, whose
// resetTimeout pushes the deadline on writes too.
func TestWebSocketV4IdleTimeoutCountsWrites(t *testing.T) {
	d := startDaemon(t, "--stream-idle-timeout", "500ms")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	const ticks = 20
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for range ticks {
			<-tick.C
			if _, err := c.Write([]byte{'.'}); err != nil {
				return
			}
		}
	}()
	c, _, err := dialV4(t, d, p.route(), []int{port(ln)}, "v4.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	c.expectPrefixes(port(ln))
	if got := c.readData(0, ticks); got != strings.Repeat(".", ticks) {
		t.Fatalf("got %q, want %d ticks", got, ticks)
	}
}

// TestWebSocketV4CloseDeliversSentData: a client that sends a message and
// then closes the WebSocket normally has that message delivered to the
// pod, which then reads EOF, as with the kubelet (whose reader hands each
// message over before it reads the next). The close comes at once, before
// the daemon has even dialed the pod.
func TestWebSocketV4CloseDeliversSentData(t *testing.T) {
	d := startDaemon(t)
	for _, subprotocol := range v4Subprotocols {
		t.Run(subprotocol, func(t *testing.T) {
			p := newPod(t)
			ln := p.listen(t, "tcp4", "127.0.0.1:0")
			type result struct {
				got []byte
				err error
			}
			received := make(chan result, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				got, err := io.ReadAll(c)
				received <- result{got, err}
			}()
			c, _, err := dialV4(t, d, p.route(), []int{port(ln)}, subprotocol)
			if err != nil {
				t.Fatal(err)
			}
			const request = "the last words before the close"
			c.write(0, []byte(request))
			// The daemon answers the close.
			if err := c.closeNormally(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("after the client's close: %v, want the close echoed", err)
			}
			select {
			case r := <-received:
				if string(r.got) != request || r.err != nil {
					t.Fatalf("pod received %q, %v; want %q then EOF", r.got, r.err, request)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the pod got no connection: the message sent before the close was dropped")
			}
		})
	}
}

// TestWebSocketV4SharesBufferBudget: the client data a v4 session queues
// for pods that do not read counts against --buffer-bytes, which SPDY
// connections share. Past it the WebSocket's reader waits (a global_buffer
// limit hit) with at most one read chunk more held; once the pods read,
// every byte arrives and the budget is free again.
func TestWebSocketV4SharesBufferBudget(t *testing.T) {
	const (
		budget  = 512 << 10
		chunk   = 128 << 10 // the session's read buffer: the most a reader overshoots
		nports  = 8
		perPort = 4 << 20
		msg     = 64 << 10
	)
	d := startDaemon(t, "--stream-buffer-bytes", "64Ki", "--session-buffer-bytes", "512Ki", "--buffer-bytes", "512Ki")
	p := newPod(t)
	var lns []net.Listener
	var ports []int
	for range nports {
		ln := p.listen(t, "tcp4", "127.0.0.1:0")
		lns = append(lns, ln)
		ports = append(ports, port(ln))
	}
	c, _, err := dialV4(t, d, p.route(), ports, "v4.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	c.expectPrefixes(ports...)
	podConns := make([]net.Conn, nports)
	for i, ln := range lns {
		pc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		podConns[i] = pc
	}

	// The client sends perPort bytes to every port, round robin; the pods
	// read nothing yet.
	sums := make([]chan [32]byte, nports)
	for i := range sums {
		sums[i] = make(chan [32]byte, 1)
	}
	sent := make(chan error, 1)
	go func() {
		hs := make([]hash.Hash, nports)
		for i := range hs {
			hs[i] = sha256.New()
		}
		rng := rand.New(rand.NewChaCha8([32]byte{1}))
		payload := make([]byte, 1+msg)
		for range perPort / msg {
			for i := range nports {
				payload[0] = byte(2 * i)
				for k := 1; k < len(payload); k += 8 {
					binary.LittleEndian.PutUint64(payload[k:], rng.Uint64())
				}
				hs[i].Write(payload[1:])
				c.ws.SetWriteDeadline(time.Now().Add(time.Minute))
				if err := c.ws.WriteMessage(websocket.BinaryMessage, payload); err != nil {
					sent <- err
					return
				}
			}
		}
		for i := range hs {
			sums[i] <- [32]byte(hs[i].Sum(nil))
		}
		sent <- nil
	}()

	// Once the pods' socket buffers are full, the daemon holds the budget
	// and its reader waits.
	eventually(t, 30*time.Second, func() (bool, string) {
		hits := d.metric(t, `portforwardd_limit_hits_total{limit="global_buffer"}`)
		held := d.metric(t, "portforwardd_buffered_bytes")
		return hits >= 1 && held >= budget, fmt.Sprintf("global_buffer hits %v, buffered_bytes %v: the reader never paused for --buffer-bytes", hits, held)
	})
	// The hold moves: each port's pump takes queued bytes into its copy
	// buffer (which the README counts on top of the budget) whenever the
	// pod's kernel takes some. It never exceeds the budget by more than
	// one read.
	for range 10 {
		if held := d.metric(t, "portforwardd_buffered_bytes"); held > budget+chunk {
			t.Fatalf("buffered_bytes = %v while the reader waits; want at most %d", held, budget+chunk)
		}
	}

	// The pods read: everything arrives, in order, and the budget empties.
	got := make(chan error, nports)
	for i, pc := range podConns {
		go func() {
			h := sha256.New()
			pc.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := io.CopyN(h, pc, perPort); err != nil {
				got <- fmt.Errorf("port %d: %w", i, err)
				return
			}
			if [32]byte(h.Sum(nil)) != <-sums[i] {
				got <- fmt.Errorf("port %d: the pod's bytes differ from the client's", i)
				return
			}
			got <- nil
		}()
	}
	if err := <-sent; err != nil {
		t.Fatalf("client: %v", err)
	}
	for range nports {
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		held := d.metric(t, "portforwardd_buffered_bytes")
		return held == 0, fmt.Sprintf("buffered_bytes = %v after the pods read everything", held)
	})
}

// TestWebSocketV4StalePortFreesBufferBudgetForSPDY: a v4 port whose pod
// reads nothing fills --buffer-bytes. After the stall timeout (10 s) it
// is reset, by its own session's reader or by a SPDY connection's waiting
// for the budget: the SPDY connection forwards, the port ends with
// nothing on its error channel (the WebSocket closes with 1000, its only
// port over), and the reset counts as a stream_buffer limit hit and a
// reset forward. With the bug v4 sessions took no part in reclaiming the
// budget: the SPDY connection waited for as long as the port stayed open.
func TestWebSocketV4StalePortFreesBufferBudgetForSPDY(t *testing.T) {
	const budget = 256 << 10
	d := startDaemon(t, "--stream-buffer-bytes", "64Ki", "--session-buffer-bytes", "256Ki", "--buffer-bytes", "256Ki")
	p := newPod(t)
	silent := p.listen(t, "tcp4", "127.0.0.1:0")
	accepted := acceptOne(t, silent)
	echo := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(echo)

	c, _, err := dialV4(t, d, p.route(), []int{port(silent)}, "v4.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	c.expectPrefixes(port(silent))
	go func() { // until the WebSocket closes: more than the pod's socket and the budget take
		msg := append([]byte{0}, make([]byte, 64<<10)...)
		for c.ws.WriteMessage(websocket.BinaryMessage, msg) == nil {
		}
	}()
	eventually(t, 30*time.Second, func() (bool, string) {
		held := d.metric(t, "portforwardd_buffered_bytes")
		return held >= budget, fmt.Sprintf("buffered_bytes %v: the port never filled --buffer-bytes", held)
	})

	s := dialRawSPDY(t, d, p.route(), "spdy")
	s.echoPair(port(echo)) // waits up to 30 s for each frame

	// The pod is not read before the port's end: a read would make the
	// port live again.
	c.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, msg, err := c.ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure {
			break
		}
		if err != nil {
			t.Fatalf("websocket: %v, want a close 1000 once the reset port ended", err)
		}
		if len(msg) > 0 && msg[0] == 1 {
			t.Fatalf("error channel got %q; a port reset for a stall gets nothing there", msg[1:])
		}
	}
	pod := <-accepted
	pod.SetReadDeadline(time.Now().Add(30 * time.Second))
	// Reset, not closed: bytes the pod had not taken were queued for it,
	// and a close would have left them in the kernel.
	if _, err := io.Copy(io.Discard, pod); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the stale port's pod connection: %v, want it reset", err)
	}
	if n := d.metric(t, `portforwardd_limit_hits_total{limit="stream_buffer"}`); n != 1 {
		t.Errorf("stream_buffer limit hits: %v, want 1", n)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		n := d.metric(t, `portforwardd_streams_total{protocol="websocket_v4",result="reset"}`)
		return n == 1, fmt.Sprintf("websocket_v4 forwards ended as reset: %v, want 1", n)
	})
}

// TestWebSocketV4BytesDroppedAfterCloseNotCounted: what a pod sends after
// the client closed its v4 WebSocket has no reader and is dropped; it is
// not counted in portforwardd_bytes_total, which counts bytes forwarded.
func TestWebSocketV4BytesDroppedAfterCloseNotCounted(t *testing.T) {
	d := startDaemon(t)
	for _, tc := range []struct{ subprotocol, protocol string }{
		{"v4.channel.k8s.io", "websocket_v4"}, {"v4.base64.channel.k8s.io", "websocket_v4_base64"},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			p := newPod(t)
			ln := p.listen(t, "tcp4", "127.0.0.1:0")
			const request, late = "request", 1 << 20
			wrote := make(chan error, 1)
			serveEach(ln, func(c *net.TCPConn) {
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.ReadAll(c) // EOF comes once the client's close has been read
				_, err := c.Write(make([]byte, late))
				wrote <- err
			})
			c, _, err := dialV4(t, d, p.route(), []int{port(ln)}, tc.subprotocol)
			if err != nil {
				t.Fatal(err)
			}
			c.expectPrefixes(port(ln))
			c.write(0, []byte(request))
			c.closeNormally()
			if err := <-wrote; err != nil {
				t.Fatalf("the pod's late write: %v", err)
			}
			series := func(result string) string {
				return fmt.Sprintf(`portforwardd_streams_total{protocol=%q,result=%q}`, tc.protocol, result)
			}
			eventually(t, 10*time.Second, func() (bool, string) {
				ended := d.metric(t, series("ok")) + d.metric(t, series("aborted")) + d.metric(t, series("reset"))
				return ended == 1, fmt.Sprintf("streams_total %v, want 1", ended)
			})
			up := d.metric(t, fmt.Sprintf(`portforwardd_bytes_total{direction="client_to_pod",protocol=%q}`, tc.protocol))
			down := d.metric(t, fmt.Sprintf(`portforwardd_bytes_total{direction="pod_to_client",protocol=%q}`, tc.protocol))
			if up != float64(len(request)) || down != 0 {
				t.Errorf("bytes_total client_to_pod %v, pod_to_client %v; want %d and 0 (the pod's %d late bytes were dropped)", up, down, len(request), late)
			}
		})
	}
}

// TestWebSocketV4ClientResetWhilePodNotReading: a v4 client that sends
// more than its port can queue to a pod that does not read, then resets
// its connection, ends its session: the pod's connection is closed, and
// the session's goroutines, fds, gauges and buffered bytes go. The
// session's reader waits for the pod while the port's queue is full (v4
// has no flow control), and it used to wait there with no one watching
// the connection: the session, its slot under --max-sessions and its
// queued bytes in --buffer-bytes were held until the pod read or wrote.
func TestWebSocketV4ClientResetWhilePodNotReading(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	podSide := acceptOne(t, ln)
	base := d.usage(t)
	c, _, err := dialV4(t, d, p.route(), []int{port(ln)})
	if err != nil {
		t.Fatal(err)
	}
	c.expectPrefixes(port(ln))
	pc := <-podSide
	defer pc.Close()
	// Writes until the daemon stops reading: the pod's socket buffers
	// and the port's queue are full.
	tcp := c.ws.NetConn().(*net.TCPConn)
	chunk := append([]byte{0}, make([]byte, 64<<10)...)
	for {
		c.ws.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		if err := c.ws.WriteMessage(websocket.BinaryMessage, chunk); err != nil {
			break
		}
	}
	if got := d.metric(t, "portforwardd_buffered_bytes"); got == 0 {
		t.Fatal("no bytes buffered for the pod that does not read: the test tells nothing")
	}
	tcp.SetLinger(0)
	tcp.Close() // a reset

	// The pod still does not read: the session must end all the same.
	d.settle(t, base, 15*time.Second)
	if got := d.metric(t, "portforwardd_buffered_bytes"); got != 0 {
		t.Fatalf("buffered_bytes %v after the session ended, want 0", got)
	}
}

// TestWebSocketV4DrainCutShortSaysGoingAway: a v4 session still open when
// --drain-timeout ends is closed with a close frame, 1001 (going away: the
// server goes down), as every other end of a v4 session the server
// chooses has its close frame; its pod's connection is closed too. With
// the bug the daemon dropped the TCP connection with no close frame, and
// the client saw an abnormal closure (1006), as if the network had broken.
func TestWebSocketV4DrainCutShortSaysGoingAway(t *testing.T) {
	d := startDaemon(t, "--drain-timeout", "300ms")
	for _, subprotocol := range v4Subprotocols {
		p := newPod(t)
		ln := p.listen(t, "tcp4", "127.0.0.1:0")
		podSide := acceptOne(t, ln)
		c, _, err := dialV4(t, d, p.route(), []int{port(ln)}, subprotocol)
		if err != nil {
			t.Fatal(err)
		}
		c.expectPrefixes(port(ln))
		pc := <-podSide
		pc.Write([]byte("open"))
		if got := c.readData(0, 4); got != "open" {
			t.Fatalf("%s: got %q", subprotocol, got)
		}
		// Read on, on a goroutine of its own: the close frame comes once
		// the daemon has been signalled.
		ended := make(chan error, 1)
		go func() {
			c.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			for {
				if _, _, err := c.ws.ReadMessage(); err != nil {
					ended <- err
					return
				}
			}
		}()
		defer func(pc net.Conn, ended chan error, subprotocol string) {
			if err := <-ended; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
				t.Errorf("%s: v4 session at the drain's end: %v, want a close frame 1001 (going away)", subprotocol, err)
			}
			pc.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.ReadAll(pc); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("%s: the pod's connection at the drain's end: %v, want it closed", subprotocol, err)
			}
		}(pc, ended, subprotocol)
	}
	d.stop(t, 30*time.Second, "after its drain timeout")
}

// TestWebSocketV4Base64ChannelsPastASCII: in v4.base64.channel.k8s.io
// the channel is the character '0'+channel of a text message, which the
// kubelet writes as Go's string('0'+channel): UTF-8, two bytes from
// channel 80 on (ports from the 41st). The daemon wrote the single byte
// '0'+channel, which from 0x80 on is no UTF-8: the text messages of the
// ports past the 40th were invalid, and a client that checks text
// messages as RFC 6455 requires (browsers, most libraries) failed the
// connection (1007) at the first of them, the 41st port's announcement.
// A client writes the same character for such a port's data channel; the
// kubelet reads only its first byte, so it drops that data (no port has
// channel 0xc2-'0'): the daemon decodes the character and forwards it.
func TestWebSocketV4Base64ChannelsPastASCII(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	echo := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(echo)
	ports := make([]int, streams.MaxChannelPorts)
	for i := range ports {
		ports[i] = port(echo)
	}
	c, _, err := dialV4(t, d, p.route(), ports, "v4.base64.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	channel := func(ch int) string { return string(rune('0' + ch)) } // the kubelet's string('0'+num)
	for i := range ports {
		for _, ch := range []int{2 * i, 2*i + 1} {
			c.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			typ, msg, err := c.ws.ReadMessage()
			if err != nil {
				t.Fatalf("port %d's announcement on channel %d: %v", i, ch, err)
			}
			want := channel(ch) + base64.StdEncoding.EncodeToString(binary.LittleEndian.AppendUint16(nil, uint16(ports[i])))
			if typ != websocket.TextMessage || !utf8.Valid(msg) || string(msg) != want {
				t.Fatalf("port %d's announcement on channel %d: type %d %q (valid UTF-8: %v), want text %q",
					i, ch, typ, msg, utf8.Valid(msg), want)
			}
		}
	}
	last := len(ports) - 1
	const m = "through the last port"
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(channel(2*last)+base64.StdEncoding.EncodeToString([]byte(m)))); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for len(got) < len(m) {
		c.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			t.Fatalf("echo through port %d: %v", last, err)
		}
		if !utf8.Valid(msg) {
			t.Fatalf("text message %q is not UTF-8", msg)
		}
		ch, size := utf8.DecodeRune(msg)
		if int(ch)-'0' != 2*last {
			t.Fatalf("message %q on channel %d, want channel %d", msg, int(ch)-'0', 2*last)
		}
		payload, err := base64.StdEncoding.DecodeString(string(msg[size:]))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, payload...)
	}
	if string(got) != m {
		t.Fatalf("echo through port %d: %q, want %q", last, got, m)
	}
}
