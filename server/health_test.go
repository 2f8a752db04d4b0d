package server

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// serveMetrics serves s's metrics listener on a loopback port and returns
// its address.
func serveMetrics(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := s.NewMetricsHTTPServer()
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

// waitClosed reads c until the server closes it, and fails if that takes
// longer than within.
func waitClosed(t *testing.T, c net.Conn, r io.Reader, within time.Duration, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	if _, err := io.Copy(io.Discard, r); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: connection still open after %v", what, within)
	}
}

// TestMetricsListenerCutsSlowClients: the metrics listener, which
// authenticates nobody and listens on every interface in the DaemonSet,
// holds no connection for as long as a client likes: one idle after its
// answer is closed after the idle timeout, one whose headers never end
// after the read header timeout, and a request declaring a body it never
// sends is answered and closed at once. Each held a goroutine and a file
// descriptor of the daemon for good.
func TestMetricsListenerCutsSlowClients(t *testing.T) {
	const timeout = 200 * time.Millisecond
	s := New(Config{Resolver: fuzzResolver{}, ReadHeaderTimeout: timeout, IdleConnTimeout: timeout})
	s.MarkServing()
	addr := serveMetrics(t, s)
	dial := func(t *testing.T, req string) (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		return c, bufio.NewReader(c)
	}
	answer := func(t *testing.T, c net.Conn, br *bufio.Reader) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
	}
	t.Run("idle after an answer", func(t *testing.T) {
		c, br := dial(t, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		answer(t, c, br)
		waitClosed(t, c, br, 5*time.Second, "keep-alive connection idle past the idle timeout")
	})
	t.Run("headers never finished", func(t *testing.T) {
		c, br := dial(t, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
		waitClosed(t, c, br, 5*time.Second, "request headers unfinished past the read header timeout")
	})
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		t.Run("body never sent to "+path, func(t *testing.T) {
			c, br := dial(t, "GET "+path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
			answer(t, c, br)
			waitClosed(t, c, br, 5*time.Second, "request with a body never sent")
		})
	}
}

// TestReadHeaderTimeoutLimitInSeconds: portforwardd_limit gives
// --read-header-timeout in seconds, fractions included; 1.5s read 1 and
// 500ms read 0, a timeout that cuts every client.
func TestReadHeaderTimeoutLimitInSeconds(t *testing.T) {
	for _, c := range []struct {
		timeout time.Duration
		want    string
	}{{1500 * time.Millisecond, "1.5"}, {500 * time.Millisecond, "0.5"}, {0, "10"}} {
		s := New(Config{Resolver: fuzzResolver{}, ReadHeaderTimeout: c.timeout})
		resp, err := http.Get("http://" + serveMetrics(t, s) + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		const series = `portforwardd_limit{limit="read_header_timeout"} `
		want := series + c.want + "\n"
		if !strings.Contains(string(body), want) {
			i := strings.Index(string(body), series)
			got := "no such series"
			if i >= 0 {
				got, _, _ = strings.Cut(string(body[i:]), "\n")
			}
			t.Errorf("ReadHeaderTimeout %v: got %q, want %q", c.timeout, got, strings.TrimSpace(want))
		}
	}
}

// TestMetricsListenerCutsClientsThatTakeNoAnswer: a client that sends
// requests to the metrics listener and never reads the answers is cut
// once an answer has waited the idle timeout for it. Its answers filled
// the socket and the server's write waited with no deadline, holding a
// goroutine and a file descriptor of the daemon for good, for anyone
// reaching the DaemonSet's 0.0.0.0:10351.
func TestMetricsListenerCutsClientsThatTakeNoAnswer(t *testing.T) {
	const timeout = 200 * time.Millisecond
	s := New(Config{Resolver: fuzzResolver{}, ReadHeaderTimeout: timeout, IdleConnTimeout: timeout})
	s.MarkServing()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := s.NewMetricsHTTPServer()
	closed := make(chan struct{})
	hs.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			close(closed)
		}
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	// Far more answers than the sockets hold, sent and never read.
	reqs := strings.Repeat("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 5000)
	go io.WriteString(c, reqs)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("connection whose client reads no answer still open after 10s")
	}
}
