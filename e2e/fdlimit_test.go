package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// limitFDs lowers the daemon's RLIMIT_NOFILE so that exactly free file
// descriptor numbers are left to it (the kernel hands out the lowest free
// number, and refuses one at or above the limit), and returns a function
// that restores the limit; the test's end restores it too.
func (d *daemon) limitFDs(t *testing.T, free int) (restore func()) {
	t.Helper()
	pid := d.cmd.Process.Pid
	var unused []int
	for fd := 0; len(unused) <= free; fd++ {
		if _, err := os.Lstat(fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); os.IsNotExist(err) {
			unused = append(unused, fd)
		}
	}
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(unused[free]), Max: old.Max}, nil); err != nil {
		t.Fatal(err)
	}
	restore = func() {
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
			select {
			case <-d.exited:
			default:
				t.Errorf("restore RLIMIT_NOFILE: %v", err)
			}
		}
	}
	t.Cleanup(restore)
	return restore
}

// TestOutOfFDsAtResolveSaysSo: a daemon at its RLIMIT_NOFILE that accepts a
// request and then cannot open the pod's namespace file answers that it is
// out of file descriptors, not that the pod's network namespace cannot be
// found (which sent users and operators after a pod that was fine), for a
// forward and for OPTIONS; once descriptors are free the same request is
// served.
func TestOutOfFDsAtResolveSaysSo(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	want := fmt.Sprintf("pod %s/%s: too many open files", p.namespace, p.name)

	// The one free descriptor goes to the accepted connection; the
	// namespace file would need a second.
	restore := d.limitFDs(t, 1)
	c, resp, body := dialRaw(t, d, rawPath(p, port(ln)))
	if c != nil {
		t.Fatal("upgraded with no descriptor left to open the namespace")
	}
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, want) {
		t.Errorf("connect-tcp at the fd limit: got %d %q, want 500 …%q", resp.StatusCode, body, want)
	}
	req, err := http.NewRequest(http.MethodOptions, d.url(p.route()), nil)
	if err != nil {
		t.Fatal(err)
	}
	oresp, err := scrapeClient.Do(req)
	if err != nil {
		t.Fatalf("OPTIONS at the fd limit: %v", err)
	}
	obody, _ := io.ReadAll(oresp.Body)
	oresp.Body.Close()
	if oresp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(obody), want) {
		t.Errorf("OPTIONS at the fd limit: got %d %q, want 500 …%q", oresp.StatusCode, obody, want)
	}

	restore()
	conn, r := dialConnectTCP(t, d, rawPath(p, port(ln)))
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo once descriptors are free: %q, %v", buf, err)
	}
}

// TestOutOfFDsAtAcceptIsAWarning: a daemon at its RLIMIT_NOFILE cannot
// accept, and its clients wait in the listen queue with no answer; the
// operator must learn it at the default log level (once, not per retry),
// and that it accepts again once descriptors are free. net/http logs its
// accept retries at debug only.
func TestOutOfFDsAtAcceptIsAWarning(t *testing.T) {
	d := startDaemon(t)
	restore := d.limitFDs(t, 0)
	resp := make(chan *http.Response, 1)
	go func() {
		r, err := scrapeClient.Get(d.url("/nowhere"))
		if err == nil {
			r.Body.Close()
		}
		resp <- r
	}()
	warned := func() (n int) {
		for _, r := range d.records() {
			if r.Level == "WARN" && strings.Contains(r.Err, "too many open files") {
				n++
			}
		}
		return n
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		return warned() > 0, "no warning that the listener is out of file descriptors"
	})
	restore()
	if r := <-resp; r == nil || r.StatusCode != http.StatusNotFound {
		t.Fatalf("the waiting request once descriptors are free: %v, want 404", r)
	}
	if n := warned(); n != 1 {
		t.Errorf("%d warnings for one episode of accept failures, want 1", n)
	}
	// The log is written behind a queue: the line may follow the answer.
	eventually(t, 10*time.Second, func() (bool, string) {
		for _, r := range d.records() {
			if r.Level == "INFO" && strings.Contains(r.Msg, "accepting connections again") {
				return true, ""
			}
		}
		return false, "no line saying the listener accepts again"
	})
}
