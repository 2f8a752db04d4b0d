package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCRISocketOfARunningDaemonIsKept: --cri-listen on a socket another
// process serves (a second daemon, the runtime itself) is a start-up
// error, and the first keeps its socket: it was removed as if stale, and
// the kubelet's next connection reached the second process.
func TestCRISocketOfARunningDaemonIsKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cri.sock")
	first, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := first.Accept(); err == nil {
			c.Close()
			accepted <- struct{}{}
		}
	}()
	if ln, err := listenUnix("unix://" + path); err == nil {
		ln.Close()
		t.Fatal("listened on a socket another process serves")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Fatalf("error %q; want it to say the socket is in use", err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the first listener's socket is gone: %v", err)
	}
	c.Close()
	<-accepted // the connection reached the first listener, not a second
}

// TestStaleCRISocketIsReplaced: a socket file nobody serves (a daemon
// that died without removing it) is replaced; anything else at the path
// is an error.
func TestStaleCRISocketIsReplaced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cri.sock")
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	ln, err := listenUnix("unix://" + path)
	if err != nil {
		t.Fatalf("a stale socket: %v", err)
	}
	ln.Close()

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := listenUnix("unix://" + file); err == nil {
		ln.Close()
		t.Fatal("listened over a regular file")
	}
}

// TestCRISocketWithAFullBacklogIsKept: a socket whose server is alive but
// has not accepted its queued connections (a busy or stopped runtime)
// refuses none: a new connection fails with EAGAIN. That is no sign of a
// stale socket: the start-up fails, and the socket stays.
func TestCRISocketWithAFullBacklogIsKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cri.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	// Queue connections nobody accepts until the backlog is full.
	full := false
	for range 16 {
		c, err := net.Dial("unix", path)
		if err != nil {
			if !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("filling the backlog: %v", err)
			}
			full = true
			break
		}
		defer c.Close()
	}
	if !full {
		t.Fatal("the backlog never filled")
	}
	if ln, err := listenUnix("unix://" + path); err == nil {
		ln.Close()
		t.Fatal("listened on a socket whose server is alive")
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the live server's socket was removed: %v", err)
	}
}

// TestCRISocketIsPrivateFromItsBind: the socket file is root's only from
// the moment bind(2) creates it, before the chmod that opens it to the
// group, whatever the umask: under a umask of 0 it was created 0777, and
// any local user could connect, and keep the runtime's API, until the
// chmod.
func TestCRISocketIsPrivateFromItsBind(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "cri.sock")
	ln, err := bindUnixPrivate(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Fatalf("the socket file is %v as bind creates it under umask 0, want -rw-------", st.Mode())
	}
	ln2, err := listenUnix("unix://" + filepath.Join(t.TempDir(), "cri.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if st, err := os.Stat(ln2.Addr().String()); err != nil || st.Mode().Perm() != 0o660 {
		t.Fatalf("listenUnix's socket: %v, %v; want -rw-rw----", st.Mode(), err)
	}
}

// TestCRISocketDirectoryIsCreated: --cri-listen in a directory that does
// not exist yet (a /run/portforwardd/ after a reboot, with no unit to
// make it) is listened on, the directory made. Found by mutation testing:
// dropping the MkdirAll survived every test, e2e included.
func TestCRISocketDirectoryIsCreated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "portforwardd", "cri.sock")
	ln, err := listenUnix("unix://" + path)
	if err != nil {
		t.Fatalf("--cri-listen in a directory not there yet: %v", err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the socket: %v", err)
	}
	c.Close()
}
