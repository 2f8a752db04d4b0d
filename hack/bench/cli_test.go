package main

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
)

func TestForwardingPort(t *testing.T) {
	for _, c := range []struct {
		line   string
		remote int
		want   int
		ok     bool
	}{
		{"Forwarding from 127.0.0.1:40123 -> 8080", 8080, 40123, true},
		{"Forwarding from 127.0.0.1:40123 -> 8080\r\n", 8080, 40123, true},
		{"Forwarding from [::1]:40123 -> 8080", 8080, 40123, true},
		{"Forwarding from 127.0.0.1:40123 -> 8081", 8080, 0, false}, // another port's listener
		{"Handling connection for 40123", 8080, 0, false},
		{"Forwarding from 127.0.0.1 -> 8080", 8080, 0, false},
		{"Forwarding from 127.0.0.1:0 -> 8080", 8080, 0, false},
		{"Forwarding from 127.0.0.1:70000 -> 8080", 8080, 0, false},
		{"error: lost connection to pod", 8080, 0, false},
	} {
		got, ok := forwardingPort(c.line, c.remote)
		if got != c.want || ok != c.ok {
			t.Errorf("forwardingPort(%q, %d) = %d, %v; want %d, %v", c.line, c.remote, got, ok, c.want, c.ok)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 10}
	b.Write([]byte("0123456"))
	if got := b.String(); got != "0123456" {
		t.Errorf("after 7 bytes: %q", got)
	}
	b.Write([]byte("789abc"))
	if got := b.String(); got != "3456789abc" {
		t.Errorf("after 13 bytes: %q, want the last 10", got)
	}
	b.Write([]byte("defghijklmnop"))
	if got := b.String(); got != "ghijklmnop" {
		t.Errorf("after a write longer than max: %q, want its last 10 bytes", got)
	}
}

// TestStartCLI builds the portforward CLI as the bench does and runs it
// with its spdy transport in front of the null SPDY server: the bench's
// clients reach the server through the local port startCLI read off the
// CLI's output, and stopping it closes that port.
func TestStartCLI(t *testing.T) {
	bin := buildCLI(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serveNullOn(ln)

	c, err := startCLI(bin, "http://"+ln.Addr().String(), "spdy", "bench", "pod", 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop()
	if host, _, err := net.SplitHostPort(c.addr); err != nil || host != "127.0.0.1" {
		t.Fatalf("the CLI's address is %q, want one on 127.0.0.1", c.addr)
	}
	p := tcpPath("cli", tcpDialer(c.addr), nil)
	if _, err := p.download(8 << 20); err != nil { // download checks the count
		t.Fatalf("download through the CLI: %v%s", err, c.logTail())
	}
	if _, err := p.upload(8 << 20); err != nil {
		t.Fatalf("upload through the CLI: %v%s", err, c.logTail())
	}
	if _, err := p.setup(); err != nil {
		t.Fatalf("echo through the CLI: %v%s", err, c.logTail())
	}
	c.stop()
	// Not a dial of c.addr: once the CLI is gone, a test running beside
	// this one may listen on the port it gave back.
	if c.cmd.ProcessState == nil {
		t.Fatal("stop returned with the CLI not waited for")
	}
	if err := c.cmd.Process.Signal(syscall.Signal(0)); err == nil {
		t.Fatal("the CLI is still running after stop")
	}
}

// TestStartCLIFails: a CLI that exits before it listens (raw probes the
// server first, and nothing listens there) is an error that says why, in
// the CLI's words.
func TestStartCLIFails(t *testing.T) {
	bin := buildCLI(t)
	c, err := startCLI(bin, "http://"+refusingAddr(t), "raw", "bench", "pod", 8080)
	if err == nil {
		c.stop()
		t.Fatal("startCLI against no server succeeded")
	}
	if !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("startCLI against no server: %v; want the CLI's exit status and its error", err)
	}
}

// buildCLI builds ./cmd/portforward with benchEnv.cliBinary, from the
// repository's root as the bench runs.
func buildCLI(t *testing.T) string {
	t.Helper()
	t.Chdir("../..")
	bin, err := (&benchEnv{tmp: t.TempDir()}).cliBinary("")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// refusingAddr returns a loopback address that refuses connections while
// the test runs: a socket bound to it that never listens holds its port,
// so that no test running beside this one can take it, as it could a port
// a closed listener gave back.
func refusingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
