package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// connectProxy is an HTTP proxy that serves CONNECT only, and dials its
// targets inside the network namespace at netnsPath: the one way from the
// test's namespace into it.
type connectProxy struct {
	addr      string
	netnsPath string

	mu      sync.Mutex
	targets []string // every CONNECT's target
}

func startConnectProxy(t *testing.T, netnsPath string) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &connectProxy{addr: ln.Addr().String(), netnsPath: netnsPath}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c.(*net.TCPConn))
		}
	}()
	return p
}

func (p *connectProxy) serve(c *net.TCPConn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect {
		io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	p.mu.Lock()
	p.targets = append(p.targets, req.Host)
	p.mu.Unlock()
	up, err := p.dial(req.Host)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(up, br) // what the client sent after its CONNECT, then the rest
		up.CloseWrite()
		close(done)
	}()
	io.Copy(c, up)
	c.CloseWrite()
	<-done
}

// dial connects to addr from inside the proxy's namespace.
func (p *connectProxy) dial(addr string) (*net.TCPConn, error) { return dialIn(p.netnsPath, addr) }

func (p *connectProxy) connects() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

// TestCLIThroughProxy: with HTTPS_PROXY naming a proxy for the server, as
// kubectl every transport of the CLI goes through it or says it cannot:
// auto takes kubectl's path (the WebSocket tunnel, which client-go sends
// through the proxy) instead of raw, which dialed the server directly
// after a probe that had gone through the proxy, and failed each
// connection where only the proxy reaches the server; --transport raw and
// h2, which do not use a proxy, fail at start with one line. Here the
// daemon is in a namespace of its own, on an address that only the proxy
// reaches.
func TestCLIThroughProxy(t *testing.T) {
	node := newPod(t) // a namespace standing for a node behind the proxy
	ipCmd(t, "-n", node.netnsName, "addr", "add", "198.18.0.1/32", "dev", "lo")
	pk := newPKI(t)
	d := startDaemonIn(t, node.netnsName, "--listen", "198.18.0.1:0", "--allow-insecure-listen",
		"--tls-cert-file", pk.certFile, "--tls-private-key-file", pk.keyFile)
	proxy := startConnectProxy(t, node.path)
	env := []string{"HTTPS_PROXY=http://" + proxy.addr, "https_proxy=", "NO_PROXY=", "no_proxy="}
	for _, transport := range []string{"auto", "spdy", "websocket", "raw", "h2"} {
		t.Run(transport, func(t *testing.T) {
			p := newPod(t)
			ln := p.listen(t, "tcp4", "127.0.0.1:0")
			serveEcho(ln)
			c := startCLIEnv(t, env, "--server", "https://"+d.addr, "--insecure-skip-tls-verify", "--transport", transport,
				"--address", "127.0.0.1", "-n", p.namespace, p.name, ":"+strconv.Itoa(port(ln)))
			if transport == "raw" || transport == "h2" {
				if code := c.exitCode(t); code != 1 {
					t.Fatalf("exit code %d, want 1; stderr %q", code, c.stderr)
				}
				stderr := c.stderr.String()
				if l := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); len(l) != 1 || !strings.HasPrefix(l[0], "error: --transport "+transport+": ") || !strings.Contains(l[0], proxy.addr) {
					t.Fatalf("stderr %q, want one line \"error: --transport %s: …%s…\"", stderr, transport, proxy.addr)
				}
				return
			}
			m := forwardingLine.FindStringSubmatch(c.line(t))
			if m == nil {
				t.Fatalf("no \"Forwarding from\" line; stderr %q", c.stderr)
			}
			conn := dialLocal(t, m[2])
			conn.SetDeadline(time.Now().Add(15 * time.Second))
			if _, err := io.WriteString(conn, "through the proxy"); err != nil {
				t.Fatal(err)
			}
			conn.CloseWrite()
			got, err := io.ReadAll(conn)
			if string(got) != "through the proxy" {
				t.Fatalf("read %q, %v back through the forward; stderr %q; the proxy's CONNECTs %q", got, err, c.stderr, proxy.connects())
			}
		})
	}
}
