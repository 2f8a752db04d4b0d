package main

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portforwardd/portforwardd/server"
)

// closedByCLI opens a connection to 127.0.0.1:port and reads until the
// CLI closes it (or resets it: a connection still in the listener's
// backlog when the CLI closes the listener). It reports false if the port
// refuses connections (the CLI closed its listeners).
func closedByCLI(t *testing.T, port string) bool {
	t.Helper()
	conn, err := net.Dial("tcp4", "127.0.0.1:"+port)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(failAfter))
	if _, err := io.ReadAll(conn); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the CLI did not close the local connection within %v", failAfter)
	}
	return true
}

// TestLostServerOrPod: with raw and h2, a local connection that finds the
// server gone (its dial fails) or the pod gone (404) prints its own error,
// and then the CLI exits 1 with kubectl's "lost connection to pod".
func TestLostServerOrPod(t *testing.T) {
	for _, transport := range []string{"raw", "h2"} {
		for _, tc := range []struct {
			name string
			lose func(d *fakeDaemon)
		}{
			{"server gone", func(d *fakeDaemon) { d.CloseClientConnections(); d.Close() }},
			{"pod gone", func(d *fakeDaemon) { d.podGone.Store(true) }},
		} {
			t.Run(transport+"/"+tc.name, func(t *testing.T) {
				d := startFakeDaemon(t, "")
				c := startCLI(t, "--server", d.URL, "--transport", transport, "--address", "127.0.0.1", "pod", ":80")
				port := c.localPort(t)
				echoOnce(t, port, "", "ping")
				tc.lose(d)
				// HTTP/2 may first try the connection it had, if it has not
				// seen it close yet: each try is a local connection.
				deadline := time.After(failAfter)
			loop:
				for closedByCLI(t, port) {
					select {
					case <-c.exited:
						break loop
					case <-deadline:
						t.Fatalf("still running %v after: %s; stderr %q", failAfter, tc.name, c.stderr)
					default:
					}
				}
				if code := c.exitCode(t, tc.name); code != 1 {
					t.Fatalf("exit %d, want 1; stderr %q", code, c.stderr)
				}
				l := lines(c.stderr.String())
				perConn := regexp.MustCompile(`^an error occurred forwarding ` + port + ` -> 80: .+`)
				if len(l) < 2 || l[len(l)-1] != "error: lost connection to pod" || !perConn.MatchString(l[len(l)-2]) {
					t.Fatalf("stderr %q; want \"an error occurred forwarding %s -> 80: …\" then \"error: lost connection to pod\"", c.stderr, port)
				}
			})
		}
	}
}

// TestServerBusyFailsOneConnection: an HTTP error other than 404 (503:
// the server is at its limits) fails that local connection only.
func TestServerBusyFailsOneConnection(t *testing.T) {
	for _, transport := range []string{"raw", "h2"} {
		t.Run(transport, func(t *testing.T) {
			d := startFakeDaemon(t, "")
			d.busy.Store(1)
			c := startCLI(t, "--server", d.URL, "--transport", transport, "--address", "127.0.0.1", "pod", ":80")
			port := c.localPort(t)
			if !closedByCLI(t, port) {
				t.Fatal("the local port refuses connections")
			}
			want := "an error occurred forwarding " + port + " -> 80: too many sessions\n"
			c.stderr.waitFor(t, "the 503's error", nil, func(s string) bool { return s == want })
			echoOnce(t, port, "", "ping")
			c.stop()
			if code := c.exitCode(t, "SIGINT"); code != 0 {
				t.Errorf("exit %d after SIGINT, want 0; stderr %q", code, c.stderr)
			}
		})
	}
}

// TestExplicitTransportChecksServer: --transport raw or h2 asks the server
// first, as auto does, so a server that is down, a pod that does not
// exist, or a forward the server forbids (which auto alone tolerates in
// the probe, for a kubelet's sake) fails before anything listens.
func TestExplicitTransportChecksServer(t *testing.T) {
	noPod := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "pod does not exist", http.StatusNotFound)
	}))
	defer noPod.Close()
	const refusal = "Forbidden (user=bob, verb=create, resource=nodes, subresource(s)=[proxy])"
	forbidden := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, refusal, http.StatusForbidden)
	}))
	defer forbidden.Close()
	down := freePorts(t, 1)[0]
	for _, transport := range []string{"raw", "h2"} {
		for _, tc := range []struct{ name, server, want string }{
			{"server down", "http://127.0.0.1:" + down, "cannot reach the server http://127.0.0.1:" + down + ": dial tcp 127.0.0.1:" + down + ": connect: connection refused"},
			{"no such pod", noPod.URL, "pod does not exist"},
			{"forbidden", forbidden.URL, refusal},
		} {
			t.Run(transport+"/"+tc.name, func(t *testing.T) {
				c := startCLI(t, "--server", tc.server, "--transport", transport, "--address", "127.0.0.1", "pod", ":80")
				code := c.exitCode(t, tc.name)
				out, errOut := c.stdout.String(), c.stderr.String()
				if code != 1 || out != "" || !strings.HasPrefix(errOut, "error: ") || !strings.HasSuffix(errOut, tc.want+"\n") || len(lines(errOut)) != 1 {
					t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1, no stdout, one line \"error: …%s\"", code, out, errOut, tc.want)
				}
			})
		}
	}
}

// TestH2BrokenConnection: when the HTTP/2 connection breaks before the
// server answered, the local connection fails (and is closed) even if its
// client sends nothing.
func TestH2BrokenConnection(t *testing.T) {
	d := startFakeDaemon(t, "")
	d.stall.Store(true)
	c := startCLI(t, "--server", d.URL, "--transport", "h2", "--address", "127.0.0.1", "pod", ":80")
	port := c.localPort(t)
	conn, err := net.Dial("tcp4", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	select {
	case <-d.uris: // the stream is open, unanswered
	case <-time.After(failAfter):
		t.Fatalf("no request within %v", failAfter)
	}
	d.CloseClientConnections()
	conn.SetDeadline(time.Now().Add(failAfter))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("the CLI did not close the local connection: %v", err)
	}
	want := "an error occurred forwarding " + port + " -> 80: "
	c.stderr.waitFor(t, want+"…", c.exited, func(s string) bool { return strings.HasPrefix(s, want) })
}

// silentListener hands out the connections it accepts until silent is
// set; from then on it holds them, accepted and unanswered, so a TLS
// handshake on them never completes.
type silentListener struct {
	net.Listener
	silent atomic.Bool
	mu     sync.Mutex
	held   []net.Conn
}

func (l *silentListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || !l.silent.Load() {
			return c, err
		}
		l.mu.Lock()
		l.held = append(l.held, c)
		l.mu.Unlock()
	}
}

func (l *silentListener) closeHeld() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.held {
		c.Close()
	}
}

// TestServerThatNeverHandshakes: with raw and h2, a server that accepts
// the connection of a local connection and never answers its TLS
// handshake fails that local connection after the handshake timeout, as
// client-go's transports (kubectl's) give up after 10 s; the local
// connection was held for as long as the server stayed silent.
func TestServerThatNeverHandshakes(t *testing.T) {
	old := tlsHandshakeTimeout
	tlsHandshakeTimeout = 200 * time.Millisecond
	t.Cleanup(func() { tlsHandshakeTimeout = old })
	for _, transport := range []string{"raw", "h2"} {
		t.Run(transport, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set(server.HeaderTransports, "connect-tcp, h2")
				w.WriteHeader(http.StatusNoContent)
			}))
			l := &silentListener{Listener: srv.Listener}
			srv.Listener = l
			srv.StartTLS()
			t.Cleanup(srv.Close)
			t.Cleanup(l.closeHeld)
			c := startCLI(t, "--server", srv.URL, "--insecure-skip-tls-verify", "--transport", transport, "--address", "127.0.0.1", "pod", ":80")
			port := c.localPort(t)
			l.silent.Store(true)
			conn, err := net.Dial("tcp4", "127.0.0.1:"+port)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(failAfter))
			if _, err := io.ReadAll(conn); err != nil {
				t.Fatalf("the CLI did not close the local connection: %v", err)
			}
			want := "an error occurred forwarding " + port + " -> 80: "
			out, ok := c.stderr.waitFor(t, want+"… handshake timeout", c.exited, func(s string) bool {
				return strings.HasPrefix(s, want) && strings.Contains(s, "handshake timeout")
			})
			if !ok {
				t.Fatalf("stderr %q", out)
			}
		})
	}
}

// TestAnswerThatForwardsNothingFailsTheConnection: a server that answers
// a forward with a status that is not the transport's own (raw: a 200 to
// the upgrade, from a server that ignores Upgrade; h2: a redirect, which
// the CLI does not follow) forwards nothing: the local connection gets no
// byte of that answer, and the error says what the server said.
func TestAnswerThatForwardsNothingFailsTheConnection(t *testing.T) {
	for _, tc := range []struct {
		transport string
		status    int
	}{
		{"raw", http.StatusOK},
		{"h2", http.StatusTemporaryRedirect},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodOptions {
					w.Header().Set(server.HeaderTransports, "connect-tcp, h2")
					w.WriteHeader(http.StatusNoContent)
					return
				}
				w.Header().Set("Location", "/elsewhere")
				w.WriteHeader(tc.status)
				io.WriteString(w, "not a forward\n")
			}))
			srv.Config.Protocols = new(http.Protocols)
			srv.Config.Protocols.SetHTTP1(true)
			srv.Config.Protocols.SetUnencryptedHTTP2(true)
			srv.Start()
			t.Cleanup(srv.Close)
			c := startCLI(t, "--server", srv.URL, "--transport", tc.transport, "--address", "127.0.0.1", "pod", ":80")
			port := c.localPort(t)
			conn, err := net.Dial("tcp4", "127.0.0.1:"+port)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(failAfter))
			got, err := io.ReadAll(conn)
			if errors.Is(err, os.ErrDeadlineExceeded) || len(got) > 0 {
				t.Errorf("the local connection read %q, %v; want it closed with nothing", got, err)
			}
			want := "an error occurred forwarding " + port + " -> 80: not a forward\n"
			c.stderr.waitFor(t, want, c.exited, func(s string) bool { return s == want })
		})
	}
}
