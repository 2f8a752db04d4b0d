package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	// The forwarding listener's warnings: the metrics listener has an
	// episode of its own when its first accept comes after the limit
	// (accept(2) takes a descriptor before it looks at the queue).
	warned := func() (n int) {
		for _, r := range d.records() {
			if r.Level == "WARN" && r.Listener == "--listen" && strings.Contains(r.Err, "too many open files") {
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
	// The episode is over once no accept has failed for 5 s; and the log
	// is written behind a queue.
	eventually(t, 20*time.Second, func() (bool, string) {
		for _, r := range d.records() {
			if r.Level == "INFO" && r.Listener == "--listen" && strings.Contains(r.Msg, "accepting connections again") {
				return true, ""
			}
		}
		return false, "no line saying --listen accepts again"
	})
}

// TestOutOfFDsAtAcceptWarnsOncePerEpisode: a daemon at its RLIMIT_NOFILE
// whose clients keep coming accepts one each time a descriptor comes
// free and fails again at once. That is one episode, and the operator
// gets one warning for it from each listener, and one line when it is
// over: the forwarding listener said "cannot accept" and "accepting
// again" for every connection it got in, and the metrics listener, whose
// server logged through Go's default logger, wrote an unstructured
// "http: Accept error" line to stderr for every retry, at any
// --log-level and past the log queue.
func TestOutOfFDsAtAcceptWarnsOncePerEpisode(t *testing.T) {
	d := startDaemon(t, "--log-level", "info")
	restore := d.limitFDs(t, 1)
	const clients = 20
	var wg sync.WaitGroup
	answers := make(chan string, 2*clients)
	for range clients {
		for _, u := range []string{d.url("/nowhere"), "http://" + d.metricsAddr + "/healthz"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := scrapeClient.Get(u)
				if err != nil {
					answers <- fmt.Sprintf("GET %s: %v", u, err)
					return
				}
				r.Body.Close()
				answers <- fmt.Sprintf("GET %s: %d", u, r.StatusCode)
			}()
		}
	}
	wg.Wait()
	close(answers)
	for a := range answers {
		if !strings.HasSuffix(a, ": 404") && !strings.HasSuffix(a, "/healthz: 200") {
			t.Errorf("with one descriptor free: %s", a)
		}
	}
	lines := func(level, msg string) map[string]int {
		n := map[string]int{}
		for _, r := range d.records() {
			if r.Level == level && strings.HasPrefix(r.Msg, msg) {
				n[r.Listener]++
			}
		}
		return n
	}
	if got := lines("WARN", "cannot accept connections"); got["--listen"] != 1 || got["--metrics-listen"] != 1 || len(got) != 2 {
		t.Errorf("warnings that a listener cannot accept, by listener: %v; want one from --listen and one from --metrics-listen", got)
	}
	for _, l := range d.logLines() {
		if !strings.HasPrefix(l, "{") {
			t.Errorf("log line that is not JSON: %q", l)
			break
		}
	}
	restore()
	eventually(t, 20*time.Second, func() (bool, string) {
		got := lines("INFO", "accepting connections again")
		return got["--listen"] == 1 && got["--metrics-listen"] == 1 && len(got) == 2,
			fmt.Sprintf("lines saying a listener accepts again, by listener: %v; want one from each", got)
	})
}

// TestOutOfFDsAtCRIAcceptIsAWarning: the CRI proxy's listener out of
// file descriptors is told as the others are, once, and when it accepts
// again: gRPC retries a failed accept with nothing in the log, and the
// kubelet's calls waited unexplained.
func TestOutOfFDsAtCRIAcceptIsAWarning(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "cri.sock")
	d := startDaemon(t, "--cri-listen", "unix://"+sock, "--cri-upstream", "unix://"+filepath.Join(dir, "runtime.sock"))
	// startDaemon waits for the forwarding listener; the CRI proxy's
	// listens after it, and says so once it does.
	eventually(t, 10*time.Second, func() (bool, string) {
		return d.logged("serving CRI proxy") > 0, "no line saying the CRI proxy serves"
	})
	restore := d.limitFDs(t, 0)
	c, err := net.Dial("unix", sock) // waits in the listen queue
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lines := func(level, msg string) int {
		n := 0
		for _, r := range d.records() {
			if r.Level == level && strings.HasPrefix(r.Msg, msg) && r.Listener == "--cri-listen" {
				n++
			}
		}
		return n
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		return lines("WARN", "cannot accept connections") == 1, "no warning that --cri-listen cannot accept"
	})
	restore()
	eventually(t, 20*time.Second, func() (bool, string) {
		return lines("INFO", "accepting connections again") == 1, "no line saying --cri-listen accepts again"
	})
	if n := lines("WARN", "cannot accept connections"); n != 1 {
		t.Errorf("%d warnings that --cri-listen cannot accept, want 1", n)
	}
}
