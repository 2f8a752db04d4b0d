package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portforwardd/portforwardd/nsenter/nsentertest"
	"github.com/vishvananda/netns"
)

var podSeq atomic.Int64

// pod is a network namespace named <namespace>_<name>, the way the
// netns-directory resolver expects it, with lo up as in a real pod.
type pod struct {
	namespace, name string
	netnsName       string
	path            string
}

func newPod(t *testing.T) *pod {
	t.Helper()
	requireE2E(t)
	n := podSeq.Add(1)
	p := &pod{namespace: fmt.Sprintf("e2e-%d", os.Getpid()), name: fmt.Sprintf("pod-%d", n)}
	p.netnsName = p.namespace + "_" + p.name
	p.path = "/run/netns/" + p.netnsName
	ipCmd(t, "netns", "add", p.netnsName)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.netnsName).Run() })
	ipCmd(t, "-n", p.netnsName, "link", "set", "lo", "up")
	return p
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// remove deletes the pod's namespace file, as when the pod goes away.
func (p *pod) remove(t *testing.T) { ipCmd(t, "netns", "del", p.netnsName) }

func (p *pod) route() string { return "/portForward/" + p.namespace + "/" + p.name }

// listen opens a listener inside the pod's namespace.
func (p *pod) listen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ln, err := nsentertest.Listen(p.path, network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// bindModes are the two ways the Kubernetes e2e binds the pod's server.
var bindModes = []struct{ name, addr string }{
	{"localhost", "127.0.0.1:0"},
	{"any", "0.0.0.0:0"},
}

// testerConfig mirrors agnhost port-forward-tester's environment.
type testerConfig struct {
	expected  string        // EXPECTED_CLIENT_DATA
	chunks    int           // CHUNKS
	chunkSize int           // CHUNK_SIZE
	interval  time.Duration // CHUNK_INTERVAL
}

// runTester does what agnhost's port-forward-tester does on ln: accept
// exactly one connection, read the expected bytes in one Read, write the
// chunks, half-close, and report each step as the tester logs it.
func runTester(ln net.Listener, cfg testerConfig) <-chan string {
	logs := make(chan string, 16)
	go func() {
		defer close(logs)
		c, err := ln.Accept()
		if err != nil {
			logs <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		logs <- "Accepted client connection"
		if cfg.expected != "" {
			buf := make([]byte, len(cfg.expected))
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, err := c.Read(buf)
			if n != len(cfg.expected) {
				logs <- fmt.Sprintf("Expected to read %d bytes from client, but got %d instead. err=%v", len(cfg.expected), n, err)
				return
			}
			if string(buf) != cfg.expected {
				logs <- fmt.Sprintf("Expected %q from client, got %q", cfg.expected, buf)
				return
			}
			logs <- "Received expected client data"
		}
		chunk := bytes.Repeat([]byte("x"), cfg.chunkSize)
		for i := range cfg.chunks {
			if _, err := c.Write(chunk); err != nil {
				logs <- "write: " + err.Error()
				return
			}
			if i < cfg.chunks-1 {
				time.Sleep(cfg.interval) // the tester's CHUNK_INTERVAL pacing
			}
		}
		logs <- "Shutting down connection"
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		io.Copy(io.Discard, c) // until the client closes its side
		logs <- "Done"
	}()
	return logs
}

// collect reads a tester's log to its end.
func collect(t *testing.T, logs <-chan string) []string {
	t.Helper()
	var got []string
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-logs:
			if !ok {
				return got
			}
			got = append(got, l)
		case <-timeout:
			t.Fatalf("tester did not finish; log so far: %q", got)
		}
	}
}

// serveEach runs handle on a goroutine of its own for every connection
// ln accepts, until ln is closed, and closes each connection when its
// handle returns.
func serveEach(ln net.Listener, handle func(c *net.TCPConn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
}

// serveEcho echoes every connection on ln and half-closes after EOF.
func serveEcho(ln net.Listener) {
	serveEach(ln, func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
}

// serveReset sends greeting on every connection of ln, waits for one byte
// from the client (it has the greeting), then resets the connection.
func serveReset(ln net.Listener, greeting string) {
	serveEach(ln, func(c *net.TCPConn) {
		io.WriteString(c, greeting)
		c.Read(make([]byte, 1))
		c.SetLinger(0) // the deferred close is a reset
	})
}

// acceptOne accepts one connection on ln and delivers it; the connection
// is closed with the test.
func acceptOne(t *testing.T, ln net.Listener) <-chan net.Conn {
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			t.Cleanup(func() { c.Close() })
			accepted <- c
		}
	}()
	return accepted
}

// dialIn connects to addr from inside the network namespace at
// netnsPath: the socket is made there, on a locked thread that then
// switches back.
func dialIn(netnsPath, addr string) (*net.TCPConn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	target, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, err
	}
	c, derr := net.DialTimeout("tcp", addr, 10*time.Second)
	if err := netns.Set(orig); err != nil {
		panic("e2e: cannot leave namespace " + netnsPath + ": " + err.Error())
	}
	if derr != nil {
		return nil, derr
	}
	return c.(*net.TCPConn), nil
}
