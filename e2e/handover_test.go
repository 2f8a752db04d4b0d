package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReusePortHandoverRefusesNoClient: with --reuse-port, a second daemon
// listens on the first's ports while the first still serves (a
// DaemonSet's surge pod beside the old one), and the first's SIGTERM then
// hands the ports over: clients that connect all along, before, during and
// after the handover, are all served; none is refused, reset or left
// unanswered, the ones the first daemon had accepted but not yet read
// when it stopped listening included. The clients are connect-tcp
// upgrades of their own and the portforward CLI over h2 and raw, whose
// local connections must all echo too: an h2 stream that crosses the
// first daemon's GOAWAY goes to the second. The daemons run in a
// namespace of their own, the node's, with net.ipv4.tcp_migrate_req=1 as
// the deploy docs ask.
func TestReusePortHandoverRefusesNoClient(t *testing.T) {
	node := newPod(t)
	if out, err := exec.Command("ip", "netns", "exec", node.netnsName, "sh", "-c",
		"echo 1 > /proc/sys/net/ipv4/tcp_migrate_req").CombinedOutput(); err != nil {
		t.Fatalf("set net.ipv4.tcp_migrate_req in the node's namespace: %v: %s", err, out)
	}
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	first := startDaemonIn(t, node.netnsName, "--reuse-port")
	for _, d := range []*daemon{first} {
		eventually(t, 10*time.Second, func() (bool, string) {
			return d.logged("listening with SO_REUSEPORT; connections queued when a listener closes go to the others") > 0,
				"no line saying the queued connections are handed over"
		})
	}

	// Clients forward one connection each, over and over, from the
	// node's namespace; each must echo.
	var (
		served  atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		errMu   sync.Mutex
		failure error
	)
	path := rawPath(p, port(ln))
	forwards := map[string]func(msg string) error{}
	for w := range 2 {
		forwards[fmt.Sprintf("connect-tcp worker %d", w)] = func(msg string) error { return forwardOnce(node.path, first.addr, path, msg) }
	}
	var clis []*cli
	for _, transport := range []string{"h2", "raw"} {
		c := startCLIIn(t, node.netnsName, "--server", "http://"+first.addr, "--transport", transport,
			"--address", "127.0.0.1", "-n", p.namespace, p.name, ":"+strconv.Itoa(port(ln)))
		l := c.line(t)
		m := forwardingLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("%s CLI: stdout line %q, want \"Forwarding from\"; stderr %q", transport, l, c.stderr)
		}
		clis = append(clis, c)
		local := "127.0.0.1:" + m[2]
		forwards["CLI "+transport] = func(msg string) error {
			c, err := dialIn(node.path, local)
			if err != nil {
				return fmt.Errorf("%s: connect: %w", msg, err)
			}
			defer c.Close()
			return echoToEnd(c, c, msg)
		}
	}
	for name, forward := range forwards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := forward(fmt.Sprintf("%s, forward %d", name, i)); err != nil {
					errMu.Lock()
					if failure == nil {
						failure = err
					}
					errMu.Unlock()
					return
				}
				served.Add(1)
			}
		}()
	}
	stopWorkers := func() {
		close(stop)
		wg.Wait()
		if failure != nil {
			t.Fatalf("a client across the handover: %v (after %d served)", failure, served.Load())
		}
	}
	waitServed := func(n int64, when string) {
		t.Helper()
		eventually(t, 60*time.Second, func() (bool, string) {
			errMu.Lock()
			defer errMu.Unlock()
			if failure != nil {
				return true, ""
			}
			return served.Load() >= n, fmt.Sprintf("%d forwards served %s, want %d", served.Load(), when, n)
		})
		errMu.Lock()
		failed := failure != nil
		errMu.Unlock()
		if failed {
			stopWorkers()
		}
	}
	waitServed(50, "by the first daemon")

	second := startDaemonIn(t, node.netnsName, "--reuse-port", "--listen", first.addr, "--metrics-listen", first.metricsAddr)
	if second.addr != first.addr {
		t.Fatalf("the second daemon listens on %s, want the first's %s", second.addr, first.addr)
	}
	eventually(t, 60*time.Second, func() (bool, string) {
		return second.logged("session started") > 0, "the second daemon has served no client while both listen"
	})
	first.stop(t, 30*time.Second, "during the handover")
	atStop := served.Load()
	waitServed(atStop+50, "after the first daemon exited")
	stopWorkers()

	total := served.Load()
	eventually(t, 10*time.Second, func() (bool, string) {
		n := int64(first.logged("session started") + second.logged("session started"))
		return n == total, fmt.Sprintf("the daemons logged %d sessions, the clients had %d forwards served", n, total)
	})
	if first.logged("session started") == 0 {
		t.Error("the first daemon served nothing")
	}
	for _, c := range clis {
		if c.hasExited() || c.stderr.String() != "" {
			t.Errorf("a CLI exited (%v) or reported %q", c.hasExited(), c.stderr)
		}
	}
}

// forwardOnce forwards one connection with connect-tcp through the daemon
// at addr, dialed from the namespace at netnsPath, and checks the pod
// echoes msg.
func forwardOnce(netnsPath, addr, path, msg string) error {
	c, err := dialIn(netnsPath, addr)
	if err != nil {
		return fmt.Errorf("%s: connect: %w", msg, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n", path); err != nil {
		return fmt.Errorf("%s: send the request: %w", msg, err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("%s: read the answer: %w", msg, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s %q, want 101", msg, resp.Status, body)
	}
	return echoToEnd(c, br, msg)
}

// echoToEnd sends msg on c, half-closes it, and checks that r, what c
// reads, brings msg back and then the end, within 20 s.
func echoToEnd(c *net.TCPConn, r io.Reader, msg string) error {
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return fmt.Errorf("%s: write: %w", msg, err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(r)
	if err != nil || string(got) != msg {
		return fmt.Errorf("%s: echoed %q, %v", msg, got, err)
	}
	return nil
}

// logged counts the daemon's log lines whose message is msg.
func (d *daemon) logged(msg string) int {
	n := 0
	for _, r := range d.records() {
		if r.Msg == msg {
			n++
		}
	}
	return n
}
