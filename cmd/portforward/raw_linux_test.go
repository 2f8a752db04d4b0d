package main

// Tests that look at the CLI's sockets through Linux's interfaces
// (prlimit, /proc, TCP_INFO), or at what only Linux's TCP_INFO watch does.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portforwardd/portforwardd/server"
)

// TestAcceptRetriesWhenOutOfFDs: a listener whose accept fails because
// the process has no file descriptor left says so once and accepts again
// once descriptors are free; it does not stop accepting for good.
func TestAcceptRetriesWhenOutOfFDs(t *testing.T) {
	d := startFakeDaemon(t, "")
	// The CLI runs in a process of its own, where no descriptor closes
	// but by the CLI's doing (see startCLIProcess).
	c, pid := startCLIProcess(t, "--server", d.URL, "--transport", "raw", "--address", "127.0.0.1", "-n", "ns", "pod", ":22")
	port, err := strconv.Atoi(c.localPort(t))
	if err != nil {
		t.Fatal(err)
	}
	// The lowest free descriptor of the CLI becomes its limit, so its
	// accept of the connection fails.
	free := 0
	for ; ; free++ {
		if _, err := os.Lstat(fmt.Sprintf("/proc/%d/fd/%d", pid, free)); os.IsNotExist(err) {
			break
		}
	}
	restore := limitFDs(t, pid, uint64(free))
	defer restore()
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(s, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(s)
		t.Fatal(err)
	}
	_, ok := c.stderr.waitFor(t, "accept error", c.exited, func(s string) bool {
		return strings.Contains(s, "error accepting connection on port") && strings.Contains(s, "too many open files")
	})
	restore()
	if !ok {
		t.Fatalf("the CLI exited (%d); stderr %q", c.code, c.stderr)
	}
	f := os.NewFile(uintptr(s), "client")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(failAfter))
	if _, err := io.WriteString(conn, "after the shortage"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("after the shortage"))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "after the shortage" {
		t.Fatalf("the connection made during the shortage: read %q, %v; want its echo", got, err)
	}
	if n := strings.Count(c.stderr.String(), "error accepting"); n != 1 {
		t.Errorf("%d accept error lines, want 1; stderr %q", n, c.stderr)
	}
}

// TestLocalGoneAfterItsFINWhileServerSilent: a local client that
// half-closes and then resets, while the server (the pod) stays silent, is
// noticed although neither direction reads or writes its socket any more:
// the forward ends and its server connection (raw) or stream (h2) is
// reset. The CLI held it, and with it the daemon's session, until the pod
// spoke.
func TestLocalGoneAfterItsFINWhileServerSilent(t *testing.T) {
	for _, transport := range []string{"raw", "h2"} {
		t.Run(transport, func(t *testing.T) {
			ended := make(chan error, 1)
			gotFIN := make(chan struct{}, 1)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case r.Method == http.MethodOptions:
					w.Header().Set(server.HeaderTransports, "connect-tcp, h2")
					w.WriteHeader(http.StatusNoContent)
				case r.Method == http.MethodPost:
					// A silent pod: it reads the client's bytes and FIN,
					// and says nothing until the stream is reset.
					w.WriteHeader(http.StatusOK)
					http.NewResponseController(w).Flush()
					io.Copy(io.Discard, r.Body)
					gotFIN <- struct{}{}
					select {
					case <-r.Context().Done():
						ended <- nil
					case <-time.After(failAfter):
						ended <- errors.New("the stream is still open")
					}
				default:
					c, brw, err := http.NewResponseController(w).Hijack()
					if err != nil {
						return
					}
					defer c.Close()
					io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n")
					io.Copy(io.Discard, brw.Reader) // the client's bytes and FIN
					gotFIN <- struct{}{}
					// Silent: look at the connection's state until the
					// CLI resets it.
					raw, _ := c.(*net.TCPConn).SyscallConn()
					deadline := time.Now().Add(failAfter)
					for {
						var state uint8
						raw.Control(func(fd uintptr) {
							info, _ := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
							state = info.State
						})
						if state == 7 { // TCP_CLOSE: reset
							ended <- nil
							return
						}
						if time.Now().After(deadline) {
							ended <- errors.New("the upgrade connection is still open")
							return
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
			}))
			srv.Config.Protocols = new(http.Protocols)
			srv.Config.Protocols.SetHTTP1(true)
			srv.Config.Protocols.SetUnencryptedHTTP2(true)
			srv.Start()
			defer srv.Close()
			c := startCLI(t, "--server", srv.URL, "--transport", transport, "--address", "127.0.0.1", "pod", ":80")
			local, err := net.Dial("tcp4", "127.0.0.1:"+c.localPort(t))
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(local, "request")
			local.(*net.TCPConn).CloseWrite()
			// The FIN reaches the server before the reset: the CLI's
			// upload direction has then ended.
			select {
			case <-gotFIN:
			case <-time.After(failAfter):
				t.Fatal("the local client's FIN did not reach the server")
			}
			local.(*net.TCPConn).SetLinger(0)
			local.Close() // a reset
			if err := <-ended; err != nil {
				t.Fatalf("a local client reset after its FIN, the server silent: %v", err)
			}
		})
	}
}

// TestH2LocalDialShortageFailsOneConnection: an h2 forward whose dial of
// the server fails for want of a local resource (here a file descriptor:
// EMFILE) fails that connection only; the server is not lost, and the
// next connection, once descriptors are free, is forwarded. (The raw
// transport's case is e2e's TestCLIRawLocalDialFailureFailsOneConnection.)
func TestH2LocalDialShortageFailsOneConnection(t *testing.T) {
	d := startFakeDaemon(t, "hi\n")
	c, pid := startCLIProcess(t, "--server", d.URL, "--transport", "h2", "--address", "127.0.0.1", "pod", ":22")
	port := c.localPort(t)
	// The lowest free descriptor is left to the accept; the dial of the
	// HTTP/2 connection (the first: the probe had a client of its own)
	// needs the next one, which the limit forbids.
	var free []int
	for fd := 0; len(free) < 2; fd++ {
		if _, err := os.Lstat(fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); os.IsNotExist(err) {
			free = append(free, fd)
		}
	}
	restore := limitFDs(t, pid, uint64(free[1]))
	defer restore()
	failed, err := net.Dial("tcp4", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer failed.Close()
	failed.SetDeadline(time.Now().Add(failAfter))
	if _, err := io.ReadAll(failed); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the connection whose dial failed is still open")
	}
	want := "an error occurred forwarding " + port + " -> 22: "
	_, ok := c.stderr.waitFor(t, want+"…too many open files", c.exited, func(s string) bool {
		return strings.Contains(s, want) && strings.Contains(s, "too many open files")
	})
	restore()
	if !ok {
		t.Fatalf("the CLI exited (%d); stderr %q", c.code, c.stderr)
	}
	echoOnce(t, port, "hi\n", "after the shortage")
	c.stop()
	if code := c.exitCode(t, "SIGINT"); code != 0 {
		t.Errorf("exit %d after SIGINT, want 0; stderr %q", code, c.stderr)
	}
	// The accept may itself have run short (the descriptor numbers can
	// move between the scan and the limit): the CLI then says so and
	// accepts again, and the dial fails as wanted.
	var errLines []string
	for _, l := range lines(c.stderr.String()) {
		if !strings.HasPrefix(l, "error accepting connection on port "+port+": ") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || !strings.HasPrefix(errLines[0], want) {
		t.Errorf("stderr %q, want one line %q…too many open files (besides accept retries)", c.stderr, want)
	}
}

// limitFDs sets process pid's RLIMIT_NOFILE soft limit to cur and returns
// what puts the old one back (once, however often it is called).
func limitFDs(t *testing.T, pid int, cur uint64) (restore func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: cur, Max: old.Max}, nil); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	return func() { once.Do(func() { unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil) }) }
}
