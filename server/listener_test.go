package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/portforwardd/portforwardd/nsenter"
	"github.com/portforwardd/portforwardd/server/certs/certstest"
)

// countingConn is a connection whose reads come from a buffer, counted.
type countingConn struct {
	net.Conn
	r     io.Reader
	reads int
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// readLikeHTTP2 reads the way net/http and its HTTP/2 server do: the
// preface's first 14 bytes with a limited read, then frames as a 9-byte
// header and a payload each.
func readLikeHTTP2(t *testing.T, c net.Conn, frames int) {
	t.Helper()
	head := make([]byte, len(h2cPreface))
	if _, err := io.ReadFull(c, head); err != nil || string(head) != h2cPreface {
		t.Fatalf("preface: %q %v", head, err)
	}
	rest := make([]byte, len("\r\n\r\nSM\r\n\r\n"))
	if _, err := io.ReadFull(c, rest); err != nil {
		t.Fatal(err)
	}
	hdr, payload := make([]byte, 9), make([]byte, 4)
	for range frames {
		if _, err := io.ReadFull(c, hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, payload); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTrackedConnBuffersCleartextHTTP2Only(t *testing.T) {
	const frames = 1000
	// 1000 WINDOW_UPDATE-sized frames (9-byte header, 4-byte payload).
	stream := h2cPreface + "\r\n\r\nSM\r\n\r\n" + strings.Repeat("\x00\x00\x04\x08\x00\x00\x00\x00\x01"+"\x00\x00\x10\x00", frames)
	cc := &countingConn{r: bytes.NewReader([]byte(stream))}
	// The preface's first read is limited to its 14 bytes, as net/http's is.
	tc := &trackedConn{Conn: cc, s: New(Config{})}
	first := make([]byte, len(h2cPreface))
	n, err := tc.Read(first)
	if err != nil || n != len(h2cPreface) {
		t.Fatal(n, err)
	}
	if tc.br == nil {
		t.Fatal("the h2c preface did not switch the connection to buffered reads")
	}
	cc2 := &countingConn{r: bytes.NewReader([]byte(stream))}
	tc2 := &trackedConn{Conn: cc2, s: tc.s}
	readLikeHTTP2(t, tc2, frames)
	if cc2.reads > 10 {
		t.Errorf("%d reads of the connection for %d small frames, want a handful (buffered)", cc2.reads, frames)
	}

	// HTTP/1.1 is left alone: bytes in a buffer of ours would be lost when
	// the connection is hijacked for an upgrade.
	h1 := "GET /portForward/ns/pod HTTP/1.1\r\nHost: x\r\n\r\nPIPELINED"
	cc3 := &countingConn{r: bytes.NewReader([]byte(h1))}
	tc3 := &trackedConn{Conn: cc3, s: tc.s}
	buf := make([]byte, 4096)
	n, _ = tc3.Read(buf)
	if tc3.br != nil || n != len(h1) {
		t.Fatalf("HTTP/1.1: buffered=%v, read %d of %d bytes", tc3.br != nil, n, len(h1))
	}
	if got := unwrapConn(tc3); got != net.Conn(cc3) {
		t.Error("unwrapConn did not return the connection under the tracker")
	}
}

// TestForwardingListenerClosesIdleConnections: the forwarding listener
// closes a connection idle for the idle timeout (the daemon's own timer,
// not http.Server's IdleTimeout, see connState): a keep-alive HTTP/1.1
// connection after its answer, an HTTP/2 connection that never opened a
// stream, and one whose streams have ended; an HTTP/2 connection with a
// forward open stays.
func TestForwardingListenerClosesIdleConnections(t *testing.T) {
	const timeout = 200 * time.Millisecond
	addr := serveEchoing(t, Config{ReadHeaderTimeout: timeout, IdleConnTimeout: timeout})
	dial := func(t *testing.T) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// h2c opens an HTTP/2 connection with prior knowledge and returns its
	// framer, the server's SETTINGS read.
	h2c := func(t *testing.T) (net.Conn, *http2.Framer) {
		t.Helper()
		c := dial(t)
		return c, h2Preface(t, c)
	}
	request := func(t *testing.T, fr *http2.Framer, id uint32, method, path string, end bool) {
		t.Helper()
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		for _, kv := range [][2]string{{":method", method}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
			enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true, EndStream: end}); err != nil {
			t.Fatal(err)
		}
	}
	// closedWithin reads c's frames until the server closes it.
	closedWithin := func(t *testing.T, c net.Conn, fr *http2.Framer, within time.Duration) bool {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(within))
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return !errors.Is(err, os.ErrDeadlineExceeded)
			}
		}
	}

	t.Run("HTTP/1.1 keep-alive after an answer", func(t *testing.T) {
		c := dial(t)
		io.WriteString(c, "OPTIONS /portForward/default/web HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("OPTIONS: %v %v", resp, err)
		}
		waitClosed(t, c, br, 5*time.Second, "keep-alive connection idle past the idle timeout")
	})
	// goAway reads c's frames until the server's GOAWAY, which must say
	// NO_ERROR and promise to serve every stream the client has opened
	// (the last stream identifier 2^31-1), and come before the close.
	goAway := func(t *testing.T, c net.Conn, fr *http2.Framer) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("no GOAWAY before the idle connection ended: %v", err)
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				if g.ErrCode != http2.ErrCodeNo || g.LastStreamID != 1<<31-1 {
					t.Fatalf("GOAWAY %v last stream %d, want NO_ERROR, last stream 2^31-1", g.ErrCode, g.LastStreamID)
				}
				return
			}
		}
	}
	t.Run("HTTP/2 that never opened a stream", func(t *testing.T) {
		c, fr := h2c(t)
		goAway(t, c, fr)
		if !closedWithin(t, c, fr, 5*time.Second) {
			t.Fatal("HTTP/2 connection with no stream still open 5s past its GOAWAY")
		}
	})
	t.Run("HTTP/2 whose streams ended", func(t *testing.T) {
		c, fr := h2c(t)
		request(t, fr, 1, http.MethodOptions, "/portForward/default/web", true)
		goAway(t, c, fr)
		if !closedWithin(t, c, fr, 5*time.Second) {
			t.Fatal("HTTP/2 connection whose stream ended still open 5s past its GOAWAY")
		}
	})
	t.Run("HTTP/2 stream that crosses the GOAWAY", func(t *testing.T) {
		// A stream the client opened before our GOAWAY reached it is
		// served, and the connection closes once it has ended.
		c, fr := h2c(t)
		goAway(t, c, fr)
		request(t, fr, 1, http.MethodPost, "/portForward/default/web?port=80", false)
		if err := fr.WriteData(1, true, []byte("crossed")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var echoed []byte
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("stream opened after the GOAWAY: connection ended having echoed %q: %v", echoed, err)
			}
			if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
				echoed = append(echoed, d.Data()...)
				if d.StreamEnded() {
					break
				}
			}
			if r, ok := f.(*http2.RSTStreamFrame); ok {
				t.Fatalf("stream opened after the GOAWAY reset: %v", r.ErrCode)
			}
		}
		if string(echoed) != "crossed" {
			t.Fatalf("stream opened after the GOAWAY echoed %q, want %q", echoed, "crossed")
		}
		if !closedWithin(t, c, fr, 5*time.Second) {
			t.Fatal("HTTP/2 connection still open 5s after the stream that crossed its GOAWAY ended")
		}
	})
	t.Run("HTTP/2 with a forward open", func(t *testing.T) {
		c, fr := h2c(t)
		request(t, fr, 1, http.MethodPost, "/portForward/default/web?port=80", false)
		// Well past the idle timeout, the forward still echoes.
		time.Sleep(5 * timeout) // the time to wait is the test's subject
		if err := fr.WriteData(1, false, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("HTTP/2 connection with a forward open closed: %v", err)
			}
			if d, ok := f.(*http2.DataFrame); ok && string(d.Data()) == "ping" {
				return
			}
		}
	})
}

// Over TLS the daemon cannot tell where net/http's frames end (it sees
// their records only), so an idle connection is closed with no GOAWAY of
// ours, which could land inside a frame (TestIdleGoAwayNeverSplitsAFrame);
// what the client reads before the close is whole frames.
func TestIdleHTTP2OverTLSCloses(t *testing.T) {
	ca := certstest.NewCA(t, "ca")
	leaf := ca.Server(t, "portforwardd")
	cfg := &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, NextProtos: []string{"h2", "http/1.1"}}
	addr := serveEchoing(t, Config{TLS: cfg, IdleConnTimeout: 200 * time.Millisecond})
	c, err := tls.Dial("tcp4", addr, &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN chose %q, want h2", p)
	}
	fr := h2Preface(t, c)
	var frames []string
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("after %v: %v, want the connection closed", frames, err)
		}
		frames = append(frames, f.Header().Type.String())
		if _, ok := f.(*http2.GoAwayFrame); ok {
			t.Fatalf("a GOAWAY over TLS, after %v: the daemon cannot tell where net/http's frames end", frames)
		}
	}
}

// Go's own HTTP/2 client, sending requests as its idle connection reaches
// the daemon's idle timeout, loses none: each finds a connection the
// daemon either serves or has told (GOAWAY) to take no more.
func TestHTTP2RequestsAtTheIdleTimeoutAreServed(t *testing.T) {
	const timeout = 20 * time.Millisecond
	addr := serveEchoing(t, Config{IdleConnTimeout: timeout})
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := "http://" + addr + "/portForward/default/web?port=80"
	failed := 0
	const n = 200
	for i := range n {
		// Around the idle timeout: some requests come before it, some
		// as it fires, some after.
		time.Sleep(timeout - 5*time.Millisecond + rand.N(10*time.Millisecond)) // the timing is the test's subject
		body := fmt.Appendf(nil, "request %d", i)
		resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			failed++
			t.Logf("request %d: %v", i, err)
			continue
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, body) {
			failed++
			t.Logf("request %d: echoed %q, %v", i, got, err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d requests failed", failed, n)
	}
}

// serveEchoing serves a Server with cfg, whose every pod is a host
// listener that echoes each connection until the client's FIN, on a
// loopback listener; it returns the listener's address.
func serveEchoing(t *testing.T, cfg Config) string {
	t.Helper()
	cfg.Resolver, cfg.Dialer = fuzzResolver{}, hostDialer(echoPods(t).Addr().String())
	s := New(cfg)
	s.MarkServing()
	return serveWith(t, s)
}

// hostDialer dials its address on the host for every pod and port.
type hostDialer string

func (d hostDialer) Dial(ctx context.Context, _ nsenter.Target, _ uint16) (*net.TCPConn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp4", string(d))
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// h2Preface opens HTTP/2 on c, as a client with prior knowledge (or
// after ALPN) does: the preface, our SETTINGS, and the server's SETTINGS
// read (and acknowledged). It returns c's framer.
func h2Preface(t *testing.T, c net.Conn) *http2.Framer {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if f, err := fr.ReadFrame(); err != nil {
		t.Fatal(err)
	} else if _, ok := f.(*http2.SettingsFrame); !ok {
		t.Fatalf("first frame %v, want SETTINGS", f)
	}
	if err := fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	return fr
}
