package nsenter

import (
	"context"
	"errors"
	"golang.org/x/sys/unix"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// TestDialReachesOnlyTheNamespace puts a listener inside a fresh netns and
// another on the same port in the test's own netns: only a dial made after a
// correct setns reaches the first.
func TestDialReachesOnlyTheNamespace(t *testing.T) {
	_, path := newNetns(t)
	inside := listenIn(t, path, "tcp4", "127.0.0.1:0")
	serveGreeting(t, inside, "pod")
	port := inside.Addr().(*net.TCPAddr).Port

	outside, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Skipf("port %d is taken in the host netns: %v", port, err)
	}
	defer outside.Close()
	serveGreeting(t, outside, "host")

	c, err := Dialer{}.Dial(context.Background(), Target{Path: path}, uint16(port))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	if got := readAll(t, c); got != "pod" {
		t.Fatalf("Dial reached %q, want the listener inside the netns (%q)", got, "pod")
	}
}

func TestDialFallsBackToIPv6(t *testing.T) {
	_, path := newNetns(t)
	ln := listenIn(t, path, "tcp6", "[::1]:0")
	serveGreeting(t, ln, "v6")
	port := ln.Addr().(*net.TCPAddr).Port

	c, err := Dialer{}.Dial(context.Background(), Target{Path: path}, uint16(port))
	if err != nil {
		t.Fatalf("Dial to a [::1]-only listener: %v", err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != net.JoinHostPort("::1", strconv.Itoa(port)) {
		t.Fatalf("remote address: got %s, want [::1]:%d", got, port)
	}
	if got := readAll(t, c); got != "v6" {
		t.Fatalf("read %q, want %q", got, "v6")
	}
}

func TestDialNothingListening(t *testing.T) {
	_, path := newNetns(t)
	ln := listenIn(t, path, "tcp4", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // the port is now certainly free in the namespace

	_, err := Dialer{}.Dial(context.Background(), Target{Path: path}, uint16(port))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Dial to a closed port: got %v, want connection refused", err)
	}
	var le *LoopbackError
	if !errors.As(err, &le) || le.IPv4 == nil || le.IPv6 == nil {
		t.Fatalf("Dial error %v: want a LoopbackError naming both attempts", err)
	}
	for _, want := range []string{path, "127.0.0.1:" + strconv.Itoa(port), "IPv6"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if got := Reason(err); got != "refused" {
		t.Errorf("Reason: got %q, want refused", got)
	}
}

func TestDialRejectsPathsThatAreNotNetns(t *testing.T) {
	requireRoot(t)
	file := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path   string
		want   error
		reason string
	}{
		{file, ErrNotNetns, "not_netns"},
		{"/proc/self/ns/uts", ErrNotNetns, "not_netns"},
		{filepath.Join(t.TempDir(), "missing"), ErrNetnsGone, "netns_gone"},
	}
	for _, tt := range tests {
		_, err := Dialer{}.Dial(context.Background(), Target{Path: tt.path}, 80)
		if !errors.Is(err, tt.want) {
			t.Errorf("Dial(%s): got %v, want %v", tt.path, err, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.path) {
			t.Errorf("Dial(%s): error %q does not name the path", tt.path, err)
		}
		if got := Reason(err); got != tt.reason {
			t.Errorf("Reason(%v): got %q, want %q", err, got, tt.reason)
		}
	}
}

// TestDialLeavesNoTrace dials 1000 times and checks that the process's open
// fds and threads are where they were, and that every thread is back in the
// test's own network namespace.
func TestDialLeavesNoTrace(t *testing.T) {
	_, path := newNetns(t)
	ln := listenIn(t, path, "tcp4", "127.0.0.1:0")
	// The server side lives in this process too: count its closes so the
	// fd count is read only when every accepted connection is gone.
	closed := make(chan struct{}, 1001)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			closed <- struct{}{}
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	// One warm-up dial lets the runtime create what it keeps (netpoller, threads).
	dialAndClose(t, path, port)
	<-closed

	fds0, threads0 := countDir(t, "/proc/self/fd"), countDir(t, "/proc/self/task")
	for range 1000 {
		dialAndClose(t, path, port)
	}
	for range 1000 {
		<-closed
	}
	fds1, threads1 := countDir(t, "/proc/self/fd"), countDir(t, "/proc/self/task")
	if fds1 != fds0 {
		t.Errorf("open fds: %d before 1000 dials, %d after", fds0, fds1)
	}
	// The scheduler may start a few threads (more under -race); a leak of
	// locked threads would be one per dial.
	if threads1 > threads0+10 {
		t.Errorf("threads: %d before 1000 dials, %d after", threads0, threads1)
	}
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		ns, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		if ns != own {
			t.Errorf("thread %s is in %s, want the process's %s", task.Name(), ns, own)
		}
	}
}

func dialAndClose(t *testing.T, path string, port uint16) {
	t.Helper()
	c, err := Dialer{}.Dial(context.Background(), Target{Path: path}, port)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	c.Close()
}

func countDir(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestDialOutOfFDsTriesNoIPv6: a dial whose 127.0.0.1 socket(2) fails for
// want of a file descriptor says so, and only so: [::1] is not tried,
// since it would fail alike or, with a descriptor freed meanwhile, be
// refused by a pod listening on 127.0.0.1 only, and the error would then
// blame the pod.
func TestDialOutOfFDsTriesNoIPv6(t *testing.T) {
	_, path := newNetns(t)
	ln := listenIn(t, path, "tcp4", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	if err := Prepare(); err != nil {
		t.Fatal(err)
	}
	// One descriptor is left: the namespace file's; the socket gets none.
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lowest := 0
	for ; ; lowest++ {
		if _, err := unix.FcntlInt(uintptr(lowest), unix.F_GETFD, 0); err != nil {
			break
		}
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(lowest + 1), Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	_, err := Dialer{}.Dial(context.Background(), Target{Path: path}, uint16(port))
	if rerr := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("Dial out of file descriptors: got %v, want too many open files", err)
	}
	if strings.Contains(err.Error(), "IPv6") || strings.Contains(err.Error(), "::1") {
		t.Fatalf("Dial out of file descriptors: %q; want no [::1] attempt", err)
	}
	if got := Reason(err); got != "other" {
		t.Errorf("Reason: got %q, want other", got)
	}
}
