package main

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portforwardd/portforwardd/server"
)

// TestRawGreetingAfter101: a pod server that talks first (SSH, SMTP) may
// have its greeting arrive in the same read as the 101; the local client
// gets it first, and the connection then forwards both ways.
func TestRawGreetingAfter101(t *testing.T) {
	const greeting = "SSH-2.0-OpenSSH_9.6\r\n"
	d := startFakeDaemon(t, greeting)
	c := startCLI(t, "--server", d.URL, "--transport", "raw", "--address", "127.0.0.1", "-n", "ns", "pod", ":22")
	port := c.localPort(t)
	echoOnce(t, port, greeting, "client hello")
	if got, want := <-d.uris, "/portForward/ns/pod?port=22"; got != want {
		t.Errorf("upgrade request URI %q, want %q", got, want)
	}
	if s := c.stderr.String(); s != "" {
		t.Errorf("stderr %q, want nothing", s)
	}
}

// TestServerQueryIgnored: a query in --server does not change the pod's
// URL that raw and h2 ask for (the probe's and client-go's ignore it too).
func TestServerQueryIgnored(t *testing.T) {
	for _, transport := range []string{"raw", "h2"} {
		t.Run(transport, func(t *testing.T) {
			d := startFakeDaemon(t, "")
			c := startCLI(t, "--server", d.URL+"/?x=y", "--transport", transport, "--address", "127.0.0.1", "-n", "ns", "pod", ":80")
			echoOnce(t, c.localPort(t), "", "ping")
			if got, want := <-d.uris, "/portForward/ns/pod?port=80"; got != want {
				t.Errorf("request URI %q, want %q", got, want)
			}
		})
	}
}

// TestRawLocalResetResetsUpgrade: a local client's reset ends its forward
// at once, as client-go resets its data stream: the upgrade connection is
// reset (the server resets the pod's socket in turn), not half-closed and
// then held for as long as the pod stays silent.
func TestRawLocalResetResetsUpgrade(t *testing.T) {
	gotErr := make(chan error, 1)
	held := make(chan struct{})
	defer close(held)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			w.Header().Set(server.HeaderTransports, "connect-tcp")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\nhi"); err != nil {
			return
		}
		c.SetReadDeadline(time.Now().Add(failAfter))
		_, err = io.Copy(io.Discard, brw.Reader) // a silent pod: reads, never closes
		gotErr <- err
		<-held
	}))
	defer srv.Close()
	c := startCLI(t, "--server", srv.URL, "--transport", "raw", "--address", "127.0.0.1", "pod", ":80")
	local, err := net.Dial("tcp4", "127.0.0.1:"+c.localPort(t))
	if err != nil {
		t.Fatal(err)
	}
	local.SetDeadline(time.Now().Add(failAfter))
	if _, err := io.ReadFull(local, make([]byte, 2)); err != nil {
		t.Fatalf("no greeting through the forward: %v", err)
	}
	local.(*net.TCPConn).SetLinger(0)
	local.Close() // a reset
	switch err := <-gotErr; {
	case errors.Is(err, syscall.ECONNRESET):
	case err == nil:
		t.Fatal("the upgrade connection was half-closed (EOF), not reset: the CLI holds it while the pod is silent")
	default:
		t.Fatalf("the upgrade connection ended with %v, want a reset", err)
	}
}

// TestH2ClosesIdleConnectionBeforeTheServer: the shared HTTP/2 connection
// is closed by the CLI when idle before the daemon's idle timeout would
// close it under a stream just being sent.
func TestH2ClosesIdleConnectionBeforeTheServer(t *testing.T) {
	if h2IdleTimeout >= server.DefaultIdleConnTimeout {
		t.Fatalf("the CLI keeps an idle HTTP/2 connection %v, the daemon %v: the daemon closes it first", h2IdleTimeout, server.DefaultIdleConnTimeout)
	}
}

// failingListener's Accept returns errs in turn, and then net.ErrClosed.
type failingListener struct {
	net.Listener // nil: only Accept is called
	errs         []error
	calls        int
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.calls++
	if len(l.errs) == 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	}
	err := l.errs[0]
	l.errs = l.errs[1:]
	return nil, err
}

// TestAcceptRetriesAfterAnUnknownError: an accept that fails for a reason
// that is neither a shortage nor a closed listener (Linux's accept(2)
// reports a firewall's EPERM, or a pending network error of the new
// connection) is reported once and tried again; only a closed listener
// ends the loop. The loop returned at once, silently, leaving the port
// dead and its connections queued unanswered.
func TestAcceptRetriesAfterAnUnknownError(t *testing.T) {
	var stderr strings.Builder
	f := &rawForwarder{stderr: &stderr}
	ln := &failingListener{errs: []error{
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EPERM)},
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EPROTO)},
	}}
	f.accept(ln, 5000, 80, io.Discard)
	if ln.calls != 3 {
		t.Errorf("%d accepts, want 3: two failed, then the listener was closed", ln.calls)
	}
	want := "error accepting connection on port 5000: accept tcp: accept4: operation not permitted; trying again\n"
	if stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
}

// TestRawHTTPSServerWithoutPort: an https --server that names no port is
// dialed on 443, as the probe and the h2 transport (net/http) dial it,
// not on http's 80.
func TestRawHTTPSServerWithoutPort(t *testing.T) {
	host := fmt.Sprintf("127.0.%d.%d", 1+rand.IntN(254), 1+rand.IntN(254))
	ln, err := net.Listen("tcp4", host+":443")
	if err != nil {
		t.Skipf("listen on %s:443: %v", host, err)
	}
	d := &fakeDaemon{greeting: "hi\n", uris: make(chan string, 100)}
	d.Server = httptest.NewUnstartedServer(http.HandlerFunc(d.serve))
	d.Listener.Close()
	d.Listener = ln
	d.StartTLS()
	t.Cleanup(d.Close)
	c := startCLI(t, "--server", "https://"+host, "--insecure-skip-tls-verify", "--transport", "raw", "--address", "127.0.0.1", "pod", ":22")
	echoOnce(t, c.localPort(t), "hi\n", "over 443")
}
