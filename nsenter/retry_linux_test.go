package nsenter

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hostService listens on addr (port 0) in the test's own network
// namespace, the daemon's, and reports every connection it gets: what a
// dial into a pod must never reach.
func hostService(t *testing.T, network, addr string) (port int, reached <-chan string) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s in the test's namespace: %v", addr, err)
	}
	ch := make(chan string, 16)
	serveEach := func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch <- c.RemoteAddr().String()
			c.Close()
		}
	}
	done := make(chan struct{})
	go func() { defer close(done); serveEach() }()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).Port, ch
}

func inNetns(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"netns", "exec", name}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("%s in %s: %v: %s", strings.Join(args, " "), name, err, out)
	}
}

// TestDialRetryStaysInThePodsNamespace: when connect(2) fails with
// EADDRNOTAVAIL, Go's dialer makes a new socket and tries again, and it
// did so after Control had taken the thread back to the daemon's network
// namespace: the retry's socket was the daemon's, and connected to the
// node's own loopback. A pod with IPv6 off (no ::1, so connecting to it
// is EADDRNOTAVAIL) and nothing on a port gave the client whatever the
// node serves on [::1] at that port; a pod whose ephemeral ports toward
// its own 127.0.0.1:port were all taken, the node's 127.0.0.1:port (or,
// as there was none, "connection refused", blaming the pod's server).
func TestDialRetryStaysInThePodsNamespace(t *testing.T) {
	t.Run("pod without ::1", func(t *testing.T) {
		name, path := newNetns(t)
		inNetns(t, name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.lo.disable_ipv6=1")
		port, reached := hostService(t, "tcp6", "[::1]:0")
		c, err := Dialer{}.Dial(context.Background(), Target{Path: path}, uint16(port))
		if c != nil {
			c.Close()
			t.Fatalf("Dial to a port nothing serves in a pod without IPv6 connected to %v from %v: the node's own [::1]:%d (reached from %v)",
				c.RemoteAddr(), c.LocalAddr(), port, <-reached)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("Dial: %v; want 127.0.0.1 refused", err)
		}
		if !errors.Is(err, syscall.EADDRNOTAVAIL) || !strings.Contains(err.Error(), "[::1]:"+strconv.Itoa(port)+": connect: cannot assign requested address") {
			t.Errorf("Dial: %q; want [::1] to say it cannot be assigned", err)
		}
		if got := Reason(err); got != "refused" {
			t.Errorf("Reason: %q, want refused", got)
		}
	})
	t.Run("pod out of ephemeral ports", func(t *testing.T) {
		name, path := newNetns(t)
		port, reached := hostService(t, "tcp4", "127.0.0.1:0")
		ln := listenIn(t, path, "tcp4", "127.0.0.1:"+strconv.Itoa(port))
		holdAccepted(t, ln)
		inNetns(t, name, "sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40001")
		for range 2 { // the pod's two ephemeral ports, taken
			c, err := Dialer{}.Dial(context.Background(), Target{Path: path}, uint16(port))
			if err != nil {
				t.Fatalf("Dial with ephemeral ports free: %v", err)
			}
			t.Cleanup(func() { c.Close() })
		}
		c, err := Dialer{}.Dial(context.Background(), Target{Path: path}, uint16(port))
		if c != nil {
			c.Close()
			t.Fatalf("Dial with the pod's ephemeral ports all taken connected to %v from %v: the node's own 127.0.0.1:%d (reached from %v)",
				c.RemoteAddr(), c.LocalAddr(), port, <-reached)
		}
		want := "127.0.0.1:" + strconv.Itoa(port) + ": connect: cannot assign requested address"
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Dial with the pod's ephemeral ports all taken: %q; want IPv4 %q", err, want)
		}
		// [::1] refused (nothing listens there): the pod serves the
		// port, the daemon's own connections took the ports.
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("Dial with the pod's ephemeral ports all taken: %q; want [::1] refused", err)
		}
		if got := Reason(err); got != "other" {
			t.Errorf("Reason(%q) = %q, want other: not the users' refused port", err, got)
		}
		select {
		case from := <-reached:
			t.Errorf("the node's own 127.0.0.1:%d was reached from %v", port, from)
		default:
		}
	})
}

// TestDialWithMultipathTCPIsOneSocket: with GODEBUG=multipathtcp=1 (or
// 3), Go's dialer makes an MPTCP socket and, when its connect fails for
// any reason, a plain TCP one: a second socket, which Control refuses
// (outside the pod's namespace), so that a port nothing serves in the pod
// was reported as "cannot assign requested address" ("unreachable"), not
// refused. The dial is one plain TCP socket, whatever GODEBUG says.
func TestDialWithMultipathTCPIsOneSocket(t *testing.T) {
	t.Setenv("GODEBUG", "multipathtcp=1")
	_, path := newNetns(t)
	port, reached := hostService(t, "tcp4", "127.0.0.1:0")
	c, err := Dialer{}.Dial(context.Background(), Target{Path: path}, uint16(port))
	if c != nil {
		c.Close()
		t.Fatalf("Dial to a port nothing serves in the pod connected to %v (reached from %v)", c.RemoteAddr(), <-reached)
	}
	var le *LoopbackError
	if !errors.As(err, &le) || !errors.Is(le.IPv4, syscall.ECONNREFUSED) || !errors.Is(le.IPv6, syscall.ECONNREFUSED) {
		t.Errorf("Dial: %v; want both addresses refused", err)
	}
	if got := Reason(err); got != "refused" {
		t.Errorf("Reason: %q, want refused", got)
	}
}

// TestDialOutOfPortsWithoutIPv6: a pod with no ::1 whose ephemeral ports
// toward its own 127.0.0.1:port are all taken can be reached on neither
// address: EADDRNOTAVAIL twice, which dial_errors_total counts as
// "other", the daemon's own connections having taken the ports, not as
// the pod refusing or its network being unreachable.
func TestDialOutOfPortsWithoutIPv6(t *testing.T) {
	name, path := newNetns(t)
	inNetns(t, name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.lo.disable_ipv6=1")
	ln := listenIn(t, path, "tcp4", "127.0.0.1:0")
	if p := ln.Addr().(*net.TCPAddr).Port; p == 40000 || p == 40001 {
		t.Skipf("the pod's port %d is one of the two ephemeral ports the test leaves it", p)
	}
	inNetns(t, name, "sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40001")
	holdAccepted(t, ln)
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	for range 2 { // the pod's two ephemeral ports, taken
		c, err := Dialer{}.Dial(context.Background(), Target{Path: path}, port)
		if err != nil {
			t.Fatalf("Dial with ephemeral ports free: %v", err)
		}
		t.Cleanup(func() { c.Close() })
	}
	c, err := Dialer{}.Dial(context.Background(), Target{Path: path}, port)
	if c != nil {
		c.Close()
		t.Fatalf("Dial connected to %v from %v, want no address reachable", c.RemoteAddr(), c.LocalAddr())
	}
	var le *LoopbackError
	if !errors.As(err, &le) || !errors.Is(le.IPv4, syscall.EADDRNOTAVAIL) || !errors.Is(le.IPv6, syscall.EADDRNOTAVAIL) {
		t.Fatalf("Dial: %v; want both addresses to say they cannot be assigned", err)
	}
	if got := Reason(err); got != "other" {
		t.Errorf("Reason(%v) = %q, want other", err, got)
	}
}

// holdAccepted accepts ln's connections until it closes and keeps each
// open until the test ends: a pod that takes connections and sends
// nothing.
func holdAccepted(t *testing.T, ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
}

// TestDialsInFlightHoldNoThread: a dial waits for its handshake with its
// goroutine unlocked from the thread that entered the pod's namespace, so
// dials to a pod that drops SYNs (iptables DROP) hold no thread each.
// Kills Control's leave not unlocking the thread: each dial in flight
// then pinned one, and a pod dropping SYNs made the daemon start a thread
// per connection attempt, kept until the dial timeout.
func TestDialsInFlightHoldNoThread(t *testing.T) {
	name, path := newNetns(t)
	const port = 9
	inNetns(t, name, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", strconv.Itoa(port), "-j", "DROP")
	// One dial that connects first lets the runtime start what it keeps.
	ln := listenIn(t, path, "tcp4", "127.0.0.1:0")
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	dialAndClose(t, path, uint16(ln.Addr().(*net.TCPAddr).Port))
	threads0 := countDir(t, "/proc/self/task")

	const dials = 40
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range dials {
		wg.Go(func() {
			if c, err := (Dialer{Timeout: time.Minute}).Dial(ctx, Target{Path: path}, port); err == nil {
				c.Close()
				t.Error("a dial to a port that drops SYNs connected")
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	// Every dial has its SYN out once the pod's namespace has as many
	// sockets in SYN_SENT.
	synSent := func() int {
		out, err := exec.Command("ip", "netns", "exec", name, "cat", "/proc/net/tcp").Output()
		if err != nil {
			t.Fatalf("read the pod's sockets: %v", err)
		}
		n := 0
		for _, line := range strings.Split(string(out), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 3 && f[3] == "02" {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(10 * time.Second); synSent() < dials; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d dials in SYN_SENT after 10s", synSent(), dials)
		}
	}
	// The scheduler may start a few threads (more under -race).
	if threads1 := countDir(t, "/proc/self/task"); threads1 > threads0+dials/4 {
		t.Errorf("threads: %d before %d dials that wait for a handshake, %d while they wait", threads0, dials, threads1)
	}
}
