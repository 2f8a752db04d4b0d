package nsenter

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/portforwardd/portforwardd/nsenter/nsentertest"
)

var netnsSeq atomic.Int64

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("PORTFORWARDD_REQUIRE_ROOT") == "1" {
			t.Fatal("needs root, and PORTFORWARDD_REQUIRE_ROOT=1")
		}
		t.Skip("needs root (CI runs these as root)")
	}
}

func ip(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// newNetns creates a named network namespace with lo up, as a pod would have,
// and returns its pinned path. It is removed when the test ends.
func newNetns(t testing.TB) (name, path string) {
	t.Helper()
	requireRoot(t)
	name = fmt.Sprintf("nsentertest-%d-%d_pod", os.Getpid(), netnsSeq.Add(1))
	ip(t, "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ip(t, "-n", name, "link", "set", "lo", "up")
	return name, filepath.Join(DefaultNetnsDir, name)
}

// listenIn opens a listener inside the namespace at path.
func listenIn(t testing.TB, path, network, addr string) net.Listener {
	t.Helper()
	ln, err := nsentertest.Listen(path, network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveGreeting writes greeting to each connection on ln and closes it. It
// handles one connection at a time and, when the test ends, closes ln and
// waits until the last connection is closed, so no fd outlives the test.
func serveGreeting(t *testing.T, ln net.Listener, greeting string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(greeting))
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
}
