package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// daemon is a running portforwardd process.
type daemon struct {
	cmd         *exec.Cmd
	addr        string // port-forward listener
	metricsAddr string
	exited      chan struct{}
	exitErr     error

	mu   sync.Mutex
	logs []string
}

// startDaemon runs the built binary on ephemeral loopback ports, with JSON
// logs, and waits until both listeners are up (it reads their addresses
// from the log).
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	return startDaemonIn(t, "", args...)
}

// startDaemonIn is startDaemon in the network namespace netnsName (ip
// netns exec); "" is the test's own.
func startDaemonIn(t *testing.T, netnsName string, args ...string) *daemon {
	t.Helper()
	requireE2E(t)
	args = append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--log-format", "json", "--log-level", "debug"}, args...)
	cmd := exec.Command(daemonBin, args...)
	if netnsName != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", netnsName, daemonBin}, args...)...)
	}
	return startDaemonCmd(t, cmd)
}

// startDaemonCmd is startDaemon for a command of the caller's, which
// runs the binary with JSON logs at debug.
func startDaemonCmd(t *testing.T, cmd *exec.Cmd) *daemon {
	t.Helper()
	requireE2E(t)
	d := &daemon{cmd: cmd, exited: make(chan struct{})}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		// Every line is read before Wait closes the pipe, so a report
		// written just before the exit is not lost.
		d.readLogs(stderr, ready)
		d.exitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
		if d.raced() {
			t.Errorf("the daemon reported a data race (built with -race: PORTFORWARDD_E2E_RACE=1)")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", strings.Join(d.logLines(), "\n"))
		}
	})
	select {
	case <-ready:
	case <-d.exited:
		t.Fatalf("portforwardd exited during start-up: %v\n%s", d.exitErr, strings.Join(d.logLines(), "\n"))
	case <-time.After(30 * time.Second):
		t.Fatal("portforwardd did not report its listeners")
	}
	return d
}

func (d *daemon) readLogs(r io.Reader, ready chan<- struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	signalled := false
	for sc.Scan() {
		line := sc.Text()
		d.mu.Lock()
		d.logs = append(d.logs, line)
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil {
			switch rec.Msg {
			case "serving port-forward":
				d.addr = rec.Addr
			case "serving metrics":
				d.metricsAddr = rec.Addr
			}
		}
		if !signalled && d.addr != "" && d.metricsAddr != "" {
			signalled = true
			close(ready)
		}
		d.mu.Unlock()
	}
	io.Copy(io.Discard, r) // past a line too long to keep, so the daemon never blocks on its log
}

// raced reports whether the race detector wrote a report to the log
// (a daemon built with -race reports each race as it happens).
func (d *daemon) raced() bool {
	for _, l := range d.logLines() {
		if strings.Contains(l, "WARNING: DATA RACE") {
			return true
		}
	}
	return false
}

func (d *daemon) logLines() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.logs...)
}

func (d *daemon) url(path string) string { return "http://" + d.addr + path }

// scrapeClient holds no idle connection to the daemon, so scraping does
// not change the daemon's fd count.
var scrapeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// metric returns the value of one sample of /metrics, such as
// `portforwardd_streams_total{protocol="spdy",result="ok"}`, or 0 if the
// series does not exist yet.
func (d *daemon) metric(t *testing.T, series string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(d.scrape(t), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	return 0
}

// scrape returns the text of /metrics.
func (d *daemon) scrape(t *testing.T) string {
	t.Helper()
	resp, err := scrapeClient.Get("http://" + d.metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return string(body)
}

// openFDs counts the daemon's open file descriptors.
func (d *daemon) openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// signal sends sig and returns a channel that yields the exit code.
func (d *daemon) signal(t *testing.T, sig syscall.Signal) <-chan int {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	ch := make(chan int, 1)
	go func() {
		<-d.exited
		ch <- d.cmd.ProcessState.ExitCode()
	}()
	return ch
}

// stop sends SIGTERM and expects the daemon to exit 0 within the time
// given; what says when, for the failure message.
func (d *daemon) stop(t *testing.T, within time.Duration, what string) {
	t.Helper()
	exit := d.signal(t, syscall.SIGTERM)
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit code %d after SIGTERM, want 0", code)
		}
	case <-time.After(within):
		t.Fatalf("the daemon did not exit within %v of SIGTERM %s", within, what)
	}
}

// eventually polls cond until it holds or the deadline passes. It is for
// state another process reaches in its own time (counts returning to a
// baseline), not for ordering the test's own actions.
func eventually(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached within %v: %s", timeout, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rssMiB is the daemon's resident set size.
func (d *daemon) rssMiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return kb >> 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
