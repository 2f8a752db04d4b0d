package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
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
