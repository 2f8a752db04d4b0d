package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cli is a running `portforward` process.
type cli struct {
	cmd    *exec.Cmd
	lines  chan string // stdout, line by line
	stderr *syncBuffer
	exited chan struct{}
}

// syncBuffer is a buffer that the process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startCLI(t *testing.T, args ...string) *cli {
	t.Helper()
	return startCLIEnv(t, nil, args...)
}

// startCLIEnv starts the CLI with env added to the test's environment.
func startCLIEnv(t *testing.T, env []string, args ...string) *cli {
	t.Helper()
	cmd := exec.Command(cliBin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	return startCLICmd(t, cmd)
}

// startCLIIn starts the CLI in the network namespace netnsName.
func startCLIIn(t *testing.T, netnsName string, args ...string) *cli {
	t.Helper()
	return startCLICmd(t, exec.Command("ip", append([]string{"netns", "exec", netnsName, cliBin}, args...)...))
}

// startCLICmd starts cmd, a command that runs the CLI.
func startCLICmd(t *testing.T, cmd *exec.Cmd) *cli {
	t.Helper()
	c := &cli{cmd: cmd, lines: make(chan string, 100), stderr: &syncBuffer{}, exited: make(chan struct{})}
	c.cmd.Stderr = c.stderr
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	go func() {
		c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.exited
	})
	return c
}

func (c *cli) line(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("portforward exited; stderr: %s", c.stderr)
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatal("no output from portforward")
		return ""
	}
}

// hasExited reports whether the process has exited.
func (c *cli) hasExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

func (c *cli) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-c.exited:
		return c.cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		t.Fatal("portforward did not exit")
		return -1
	}
}

var forwardingLine = regexp.MustCompile(`^Forwarding from (127\.0\.0\.1|\[::1\]):(\d+) -> (\d+)$`)

// expectForwarding reads the two "Forwarding from" lines for one port and
// returns the local port.
func (c *cli) expectForwarding(t *testing.T, remote int) int {
	t.Helper()
	local := 0
	for _, addr := range []string{"127.0.0.1", "[::1]"} {
		l := c.line(t)
		m := forwardingLine.FindStringSubmatch(l)
		if m == nil || m[1] != addr || m[3] != strconv.Itoa(remote) {
			t.Fatalf("stdout line %q, want \"Forwarding from %s:PORT -> %d\"", l, addr, remote)
		}
		p, _ := strconv.Atoi(m[2])
		if local != 0 && p != local {
			t.Fatalf("IPv4 and IPv6 listen on %d and %d", local, p)
		}
		local = p
	}
	return local
}

func TestCLIForwardsLikeKubectl(t *testing.T) {
	d := startDaemon(t)
	for _, transport := range []struct{ flag, protocol string }{{"auto", "raw"}, {"spdy", "spdy"}, {"websocket", "spdy_websocket"}, {"raw", "raw"}, {"h2", "h2"}} {
		t.Run(transport.flag, func(t *testing.T) {
			p := newPod(t)
			ln := p.listen(t, "tcp4", "127.0.0.1:0")
			serveEcho(ln)
			c := startCLI(t, "--server", "http://"+d.addr, "--transport", transport.flag, "-n", p.namespace, "pod/"+p.name, ":"+strconv.Itoa(port(ln)))
			local := c.expectForwarding(t, port(ln))
			for _, network := range []string{"tcp4", "tcp6"} {
				addr := net.JoinHostPort(map[string]string{"tcp4": "127.0.0.1", "tcp6": "::1"}[network], strconv.Itoa(local))
				conn, err := net.Dial(network, addr)
				if err != nil {
					t.Fatalf("dial %s: %v", addr, err)
				}
				echoOnce(t, conn.(*net.TCPConn), "via "+network)
				conn.Close()
				if l := c.line(t); l != fmt.Sprintf("Handling connection for %d", local) {
					t.Fatalf("stdout line %q, want \"Handling connection for %d\"", l, local)
				}
			}
			eventually(t, 10*time.Second, func() (bool, string) {
				n := d.metric(t, fmt.Sprintf(`portforwardd_sessions_active{protocol=%q}`, transport.protocol)) +
					d.metric(t, fmt.Sprintf(`portforwardd_sessions_total{protocol=%q,result="closed"}`, transport.protocol))
				return n >= 1, "no " + transport.protocol + " session"
			})
			c.cmd.Process.Signal(syscall.SIGINT)
			if code := c.exitCode(t); code != 0 {
				t.Fatalf("exit code after SIGINT: %d, want 0; stderr: %s", code, c.stderr)
			}
		})
	}
}

func TestCLISeveralPorts(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	a, b := p.listen(t, "tcp4", "127.0.0.1:0"), p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(a)
	serveEcho(b)
	fixed := freeFixedPort(t)
	c := startCLI(t, "--server", "http://"+d.addr, "--address", "127.0.0.1", "-n", p.namespace, p.name,
		fmt.Sprintf("%d:%d", fixed, port(a)), fmt.Sprintf("0:%d", port(b)))
	l1, l2 := c.line(t), c.line(t)
	if want := fmt.Sprintf("Forwarding from 127.0.0.1:%d -> %d", fixed, port(a)); l1 != want {
		t.Fatalf("first line %q, want %q", l1, want)
	}
	m := forwardingLine.FindStringSubmatch(l2)
	if m == nil || m[3] != strconv.Itoa(port(b)) {
		t.Fatalf("second line %q", l2)
	}
	for _, local := range []string{strconv.Itoa(fixed), m[2]} {
		conn, err := net.Dial("tcp4", "127.0.0.1:"+local)
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, conn.(*net.TCPConn), "port "+local)
		conn.Close()
	}
}

// freeFixedPort returns a port nothing listens on at 127.0.0.1, for a CLI
// to listen on by number. It comes from below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range): a port from 127.0.0.1:0, closed again,
// is in that range, where a listener on port 0 of any process (the unit
// packages run beside this one) could take it before the CLI binds it, and
// the CLI then failed to listen and the test waited 30 s for its output.
func freeFixedPort(t *testing.T) int {
	t.Helper()
	low := 32768 // the default low end of the range
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	if low <= 2048 {
		t.Fatalf("the ephemeral port range starts at %d: no port below it to choose", low)
	}
	for p := low/2 + rand.IntN(low/2); p < low; p++ {
		ln, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		return p
	}
	t.Fatalf("no free port on 127.0.0.1 below %d", low)
	return 0
}

// TestCLIBadInput: every mistake is one line on stderr and exit code 1.
func TestCLIBadInput(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	server := "http://" + d.addr
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no ports", []string{"--server", server, "pod"}, "a pod and at least one port are required"},
		{"malformed port", []string{"--server", server, "pod", "1:2:3"}, "invalid port format '1:2:3'"},
		{"remote port 0", []string{"--server", server, "pod", "8080:0"}, "remote port must be > 0"},
		{"remote port empty", []string{"--server", server, "pod", "8080:"}, "remote port cannot be empty"},
		{"two slashes", []string{"--server", server, "pod/web/x", "80"}, "may not have more than one slash"},
		{"remote port too large", []string{"--server", server, "pod", "70000"}, "error parsing local port '70000'"},
		{"not a pod", []string{"--server", server, "svc/web", "80"}, "only pods can be forwarded to"},
		{"unknown pod", []string{"--server", server, "-n", p.namespace, "nope", "80"}, "pod does not exist"},
		{"server down", []string{"--server", "http://127.0.0.1:1", "pod", "80"}, "cannot reach the server http://127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused"},
		{"bad server URL", []string{"--server", "ftp://x", "pod", "80"}, "--server"},
		{"local port in use", []string{"--server", server, "--address", "127.0.0.1", "-n", p.namespace, p.name,
			fmt.Sprintf("%d:80", port(busy))}, "address already in use"},
		{"unknown transport", []string{"--server", server, "--transport", "carrier-pigeon", "pod", "80"}, "--transport"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(cliBin, tt.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			msg := strings.TrimSuffix(stderr.String(), "\n")
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "error: ") || !strings.Contains(msg, tt.want) {
				t.Errorf("stderr %q, want one line \"error: …%s…\"", stderr.String(), tt.want)
			}
		})
	}
}

// TestCLILostConnection: when the pod or the daemon goes away the CLI
// exits 1 with kubectl's "lost connection to pod". spdy and websocket
// notice when their connection closes; raw and h2 (auto picks raw) at the
// next local connection, which fails with its own error first.
func TestCLILostConnection(t *testing.T) {
	for _, lost := range []string{"pod", "daemon"} {
		for _, transport := range []string{"auto", "spdy", "websocket", "raw", "h2"} {
			t.Run(lost+"/"+transport, func(t *testing.T) {
				d := startDaemon(t)
				p, ln, c, local := startEchoCLI(t, d, transport)
				before := dialLocal(t, local)
				echoOnce(t, before, "before the loss")
				before.Close()
				if lost == "pod" {
					ln.Close()
					p.remove(t)
				} else {
					d.cmd.Process.Kill()
					<-d.exited
				}
				// Local connections until the CLI exits: raw and h2 notice
				// the loss at the first one (h2 at a later one if it tries
				// the HTTP/2 connection it had before it sees that close).
				deadline := time.Now().Add(30 * time.Second)
				for !c.hasExited() && time.Now().Before(deadline) {
					conn, err := net.Dial("tcp4", "127.0.0.1:"+local)
					if err != nil {
						break // the listener is closed: the CLI is exiting
					}
					conn.SetDeadline(deadline)
					io.ReadAll(conn)
					conn.Close()
				}
				if code := c.exitCode(t); code != 1 {
					t.Fatalf("exit code %d, want 1; stderr %q", code, c.stderr)
				}
				stderr := c.stderr.String()
				if !strings.HasSuffix(stderr, "error: lost connection to pod\n") {
					t.Fatalf("stderr %q does not end with \"error: lost connection to pod\"", stderr)
				}
				if transport != "spdy" && transport != "websocket" && !strings.Contains(stderr, "an error occurred forwarding "+local+" -> ") {
					t.Fatalf("stderr %q lacks the failed connection's \"an error occurred forwarding %s -> …\"", stderr, local)
				}
			})
		}
	}
}

// startEchoCLI starts an echo pod and the CLI forwarding a free local
// port on 127.0.0.1 to it through d with transport, and returns the pod,
// its listener, the CLI and the local port.
func startEchoCLI(t *testing.T, d *daemon, transport string) (*pod, net.Listener, *cli, string) {
	t.Helper()
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	c := startCLI(t, "--server", "http://"+d.addr, "--transport", transport, "--address", "127.0.0.1", "-n", p.namespace, p.name, ":"+strconv.Itoa(port(ln)))
	l := c.line(t)
	m := forwardingLine.FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("stdout line %q, want \"Forwarding from\"; stderr %q", l, c.stderr)
	}
	return p, ln, c, m[2]
}

func dialLocal(t *testing.T, port string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp4", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// TestCLISystemTrustedTLS: an https --server whose certificate the system
// trusts needs no TLS flag, as for kubectl: every transport speaks TLS to
// it.
func TestCLISystemTrustedTLS(t *testing.T) {
	pk := newPKI(t)
	d := startDaemon(t, "--tls-cert-file", pk.certFile, "--tls-private-key-file", pk.keyFile)
	for _, transport := range []string{"auto", "raw", "h2", "spdy", "websocket"} {
		t.Run(transport, func(t *testing.T) {
			p := newPod(t)
			ln := p.listen(t, "tcp4", "127.0.0.1:0")
			serveEcho(ln)
			// Go reads the system's roots from SSL_CERT_FILE when it is set.
			c := startCLIEnv(t, []string{"SSL_CERT_FILE=" + pk.caFile}, "--server", "https://"+d.addr, "--transport", transport,
				"--address", "127.0.0.1", "-n", p.namespace, p.name, ":"+strconv.Itoa(port(ln)))
			m := forwardingLine.FindStringSubmatch(c.line(t))
			if m == nil {
				t.Fatalf("no \"Forwarding from\" line; stderr %q", c.stderr)
			}
			conn := dialLocal(t, m[2])
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.WriteString(conn, "over TLS"); err != nil {
				t.Fatal(err)
			}
			conn.CloseWrite()
			got, err := io.ReadAll(conn)
			if string(got) != "over TLS" {
				c.cmd.Process.Signal(syscall.SIGINT)
				<-c.exited
				t.Fatalf("read %q, %v back through the forward, want %q; stderr %q", got, err, "over TLS", c.stderr)
			}
		})
	}
}

// TestCLIRawLocalDialFailureFailsOneConnection: a dial to the server that
// fails for want of a local resource (here a file descriptor: EMFILE) is
// that connection's failure, as a 503 is; the server is not lost, and the
// other connections go on.
func TestCLIRawLocalDialFailureFailsOneConnection(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	c := startCLI(t, "--server", "http://"+d.addr, "--transport", "raw", "--address", "127.0.0.1", "-n", p.namespace, p.name, ":"+strconv.Itoa(port(ln)))
	m := forwardingLine.FindStringSubmatch(c.line(t))
	if m == nil {
		t.Fatal("no \"Forwarding from\" line")
	}
	before := dialLocal(t, m[2])
	echoOnce(t, before, "before")

	// The lowest free descriptor number is left to the next accept; its
	// dial to the server needs the next one, which the limit forbids.
	pid := c.cmd.Process.Pid
	var free []int
	for fd := 0; len(free) < 2; fd++ {
		if _, err := os.Lstat(fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); os.IsNotExist(err) {
			free = append(free, fd)
		}
	}
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(free[1]), Max: old.Max}, nil); err != nil {
		t.Fatal(err)
	}
	failed := dialLocal(t, m[2])
	failed.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(failed); err != nil {
		t.Fatalf("the connection whose dial failed: %v", err)
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil); err != nil && !c.hasExited() {
		t.Fatal(err)
	}
	before.SetDeadline(time.Now().Add(30 * time.Second))
	_, err := io.WriteString(before, "after")
	if err == nil {
		_, err = io.ReadFull(before, make([]byte, len("after")))
	}
	if err != nil {
		code := c.exitCode(t)
		t.Fatalf("the connection opened before broke (%v): exit %d, stderr %q", err, code, c.stderr)
	}
	c.cmd.Process.Signal(syscall.SIGINT)
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0; stderr %q", code, c.stderr)
	}
	// The accept of the failed connection may itself have run short (the
	// descriptor numbers can move between the scan and the limit); the
	// CLI then says so and accepts again, and the dial fails as wanted.
	var errLines []string
	for _, l := range strings.SplitAfter(c.stderr.String(), "\n") {
		if l != "" && !strings.HasPrefix(l, "error accepting connection on port "+m[2]+": ") {
			errLines = append(errLines, l)
		}
	}
	want := "an error occurred forwarding " + m[2] + " -> " + strconv.Itoa(port(ln)) + ": "
	if len(errLines) != 1 || !strings.HasPrefix(errLines[0], want) || !strings.Contains(errLines[0], "too many open files") {
		t.Fatalf("stderr %q, want one line %q…too many open files (besides accept retries)", c.stderr, want)
	}
}

// TestCLIRefusedPortFailsOneConnection: a local connection to a pod port
// nothing listens on fails with its own error line; the CLI goes on, the
// connections already open keep forwarding and new ones work (issue 5:
// an error on one forwarded connection does not end the others unless
// the pod is gone). kubectl ends its whole session here.
func TestCLIRefusedPortFailsOneConnection(t *testing.T) {
	d := startDaemon(t)
	for _, transport := range []string{"auto", "spdy", "websocket", "raw", "h2"} {
		t.Run(transport, func(t *testing.T) {
			p := newPod(t)
			ln := p.listen(t, "tcp4", "127.0.0.1:0")
			serveEcho(ln)
			closed := p.listen(t, "tcp4", "127.0.0.1:0")
			dead := port(closed)
			closed.Close()
			c := startCLI(t, "--server", "http://"+d.addr, "--transport", transport, "--address", "127.0.0.1", "-n", p.namespace, p.name,
				":"+strconv.Itoa(port(ln)), ":"+strconv.Itoa(dead))
			var local [2]string
			for i := range local {
				m := forwardingLine.FindStringSubmatch(c.line(t))
				if m == nil {
					t.Fatalf("no \"Forwarding from\" line; stderr %q", c.stderr)
				}
				local[i] = m[2]
			}
			before := dialLocal(t, local[0])
			echoOnce(t, before, "before")

			failed := dialLocal(t, local[1])
			failed.SetDeadline(time.Now().Add(30 * time.Second))
			io.ReadAll(failed) // closed (or reset) by the CLI
			// The failure is reported before the connection is closed by
			// spdy and websocket, after it by raw and h2: wait for its line.
			want := "an error occurred forwarding " + local[1] + " -> " + strconv.Itoa(dead)
			eventually(t, 30*time.Second, func() (bool, string) {
				return strings.Contains(c.stderr.String(), "An error occurred forwarding") || strings.Contains(c.stderr.String(), want) || c.hasExited(),
					"no error line for the refused connection"
			})
			if c.hasExited() {
				t.Fatalf("the CLI exited %d after one connection to a port nothing listens on; stderr %q", c.exitCode(t), c.stderr)
			}
			echoOnce(t, before, "after")
			after := dialLocal(t, local[0])
			echoOnce(t, after, "a new connection")
			if c.hasExited() {
				t.Fatalf("the CLI exited %d; stderr %q", c.exitCode(t), c.stderr)
			}
			c.cmd.Process.Signal(syscall.SIGINT)
			if code := c.exitCode(t); code != 0 {
				t.Fatalf("exit code after SIGINT: %d, want 0; stderr: %s", code, c.stderr)
			}
			if strings.Contains(c.stderr.String(), "lost connection") {
				t.Fatalf("stderr %q", c.stderr)
			}
		})
	}
}

// TestCLISIGTERMWithConnectionOpen: SIGTERM, like SIGINT, ends the CLI
// with exit code 0 while a forwarded connection is open: the connection is
// closed, not left hanging, and the port no longer listens.
func TestCLISIGTERMWithConnectionOpen(t *testing.T) {
	d := startDaemon(t)
	for _, transport := range []string{"auto", "spdy", "websocket", "raw", "h2"} {
		t.Run(transport, func(t *testing.T) {
			_, _, c, local := startEchoCLI(t, d, transport)
			open := dialLocal(t, local)
			echoOnce(t, open, "in flight")
			c.cmd.Process.Signal(syscall.SIGTERM)
			if code := c.exitCode(t); code != 0 {
				t.Fatalf("exit code after SIGTERM: %d, want 0; stderr %q", code, c.stderr)
			}
			open.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.ReadAll(open); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the open connection was left hanging after the CLI exited")
			}
			if conn, err := net.Dial("tcp4", "127.0.0.1:"+local); err == nil {
				conn.Close()
				t.Fatalf("127.0.0.1:%s still listens after SIGTERM", local)
			}
		})
	}
}

// TestCLIServerDraining: a connection under way when the daemon starts its
// graceful drain (SIGTERM) finishes, whatever the transport, also when a
// new local connection fails meanwhile (the daemon takes nothing new); the
// CLI then exits 1 with "lost connection to pod" once the connections
// under way are done, as kubectl's session ends when the drain has let its
// connections finish. raw and h2 exited at the new connection's failed
// dial, and cut the connections the daemon was still serving.
func TestCLIServerDraining(t *testing.T) {
	for _, transport := range []string{"auto", "spdy", "websocket", "raw", "h2"} {
		t.Run(transport, func(t *testing.T) {
			d := startDaemon(t, "--drain-timeout", "30s")
			_, _, c, local := startEchoCLI(t, d, transport)
			under := dialLocal(t, local)
			echoOnce(t, under, "before the drain")
			exit := d.signal(t, syscall.SIGTERM)
			eventually(t, 10*time.Second, func() (bool, string) {
				for _, l := range d.logLines() {
					if strings.Contains(l, `"shutting down"`) {
						return true, ""
					}
				}
				return false, "no \"shutting down\" in the daemon's log"
			})
			// A new local connection: the daemon, draining, takes it no
			// more, and the CLI closes it.
			late := dialLocal(t, local)
			late.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.ReadAll(late); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the connection made during the drain was left hanging")
			}
			if transport != "spdy" && transport != "websocket" {
				eventually(t, 10*time.Second, func() (bool, string) {
					return strings.Contains(c.stderr.String(), "an error occurred forwarding "+local+" -> "), "stderr " + strconv.Quote(c.stderr.String())
				})
			}
			echoOnce(t, under, "during the drain")
			under.CloseWrite()
			under.SetReadDeadline(time.Now().Add(30 * time.Second))
			if rest, err := io.ReadAll(under); err != nil || len(rest) != 0 {
				t.Fatalf("the connection under way ended with %q, %v after its FIN, want a clean end; stderr %q", rest, err, c.stderr)
			}
			select {
			case code := <-exit:
				if code != 0 {
					t.Fatalf("daemon exit code %d after SIGTERM", code)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the daemon did not exit once its last connection ended")
			}
			if code := c.exitCode(t); code != 1 {
				t.Fatalf("exit code %d, want 1; stderr %q", code, c.stderr)
			}
			if stderr := c.stderr.String(); !strings.HasSuffix(stderr, "error: lost connection to pod\n") {
				t.Fatalf("stderr %q does not end with \"error: lost connection to pod\"", stderr)
			}
		})
	}
}
