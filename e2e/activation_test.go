package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"
)

// startActivated runs the daemon as systemd runs a socket-activated
// service: the socket at descriptor 3, LISTEN_PID its own PID (set by a
// shell that then execs it, keeping its PID), LISTEN_FDS and
// LISTEN_FDNAMES naming it "listen", and --listen fd://listen.
func startActivated(t *testing.T, sock *net.TCPListener) *daemon {
	t.Helper()
	f, err := sock.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, daemonBin,
		"--listen", "fd://listen", "--metrics-listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=listen")
	return startDaemonCmd(t, cmd)
}

// TestSocketActivatedRestartRefusesNoClient: run by systemd with its
// socket passed, the daemon serves on it, and a client that connects
// while the daemon stops and before the next one runs is served by the
// next one, not refused.
func TestSocketActivatedRestartRefusesNoClient(t *testing.T) {
	requireE2E(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sock := l.(*net.TCPListener)

	first := startActivated(t, sock)
	if first.addr != sock.Addr().String() {
		t.Fatalf("the daemon serves on %s, want the socket passed, %s", first.addr, sock.Addr())
	}
	c, br := dialConnectTCP(t, first, rawPath(p, port(ln)))
	c.SetDeadline(time.Now().Add(30 * time.Second))
	echoThrough(t, c, br, "ping")
	c.Close()
	first.stop(t, 30*time.Second, "with no forward open")

	// No daemon runs; a client comes.
	late, err := net.Dial("tcp4", sock.Addr().String())
	if err != nil {
		t.Fatalf("a client while no daemon runs: %v; want it to wait in the socket's backlog", err)
	}
	defer late.Close()
	late.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(late, "GET "+rawPath(p, port(ln))+" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n"); err != nil {
		t.Fatal(err)
	}

	startActivated(t, sock)
	lbr := bufio.NewReader(late)
	resp, err := http.ReadResponse(lbr, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("the client that came between the daemons: %v, %v; want 101 from the next one", resp, err)
	}
	echoThrough(t, late, lbr, "pong")
}
