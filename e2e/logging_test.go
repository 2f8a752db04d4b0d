package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logRecord is one line of the daemon's JSON log, with the keys these
// tests look at.
type logRecord struct {
	Level    string `json:"level"`
	Msg      string `json:"msg"`
	Path     string `json:"path"`
	Reason   string `json:"reason"`
	Err      string `json:"err"`
	Answer   string `json:"answer"`
	User     string `json:"user"`
	Protocol string `json:"protocol"`
	Listener string `json:"listener"`
}

// records parses the daemon's log lines; a line that is not JSON (a race
// report) is skipped.
func (d *daemon) records() []logRecord {
	var recs []logRecord
	for _, l := range d.logLines() {
		var r logRecord
		if json.Unmarshal([]byte(l), &r) == nil {
			recs = append(recs, r)
		}
	}
	return recs
}

// TestRefusalsDoNotFloodTheLog: a refusal the client brings on itself (a
// wrong path, method or header, an unknown pod or token, a bad port) is
// something anyone who reaches the listener can repeat as fast as it
// likes, and upgrade_failures_total counts it: at --log-level info a
// flood of them writes no line at all, as the kubelet logs nothing for
// them at its default verbosity.
func TestRefusalsDoNotFloodTheLog(t *testing.T) {
	p := newPod(t)
	d := startDaemon(t, "--log-level", "info")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	type req struct {
		method, path string
		header       http.Header
	}
	reqs := []req{
		{"GET", "/", nil},
		{"GET", "/wp-login.php", nil},
		{"GET", "/portForward/ns/no-such-pod", nil},
		{"GET", "/portForward/NS!/pod", nil},
		{"DELETE", p.route(), nil},
		{"GET", p.route(), nil}, // no upgrade headers
		{"GET", p.route(), http.Header{"Connection": {"Upgrade"}, "Upgrade": {"SPDY/3.1"}}},                                   // no protocol
		{"GET", p.route() + "?port=0", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"connect-tcp"}}},                    // bad port
		{"GET", p.route(), http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}}}, // bad handshake
		{"GET", "/portforward/AAAAAAAA", nil},
	}
	const rounds = 50
	for range rounds {
		for _, r := range reqs {
			hr, err := http.NewRequest(r.method, d.url(r.path), nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range r.header {
				hr.Header[k] = v
			}
			resp, err := client.Do(hr)
			if err != nil {
				t.Fatalf("%s %s: %v", r.method, r.path, err)
			}
			resp.Body.Close()
			if resp.StatusCode < 400 || resp.StatusCode >= 500 {
				t.Fatalf("%s %s: %s, want a 4xx refusal", r.method, r.path, resp.Status)
			}
		}
	}
	d.stop(t, 10*time.Second, "after the refusals")
	var lines []string
	for _, r := range d.records() {
		if r.Path != "" || r.Reason != "" {
			lines = append(lines, fmt.Sprintf("%s %q path=%s reason=%s", r.Level, r.Msg, r.Path, r.Reason))
		}
	}
	if len(lines) > 0 {
		t.Errorf("%d requests refused for the client's own fault wrote %d lines at --log-level info, want none; the first:\n%s",
			rounds*len(reqs), len(lines), strings.Join(lines[:min(len(lines), 10)], "\n"))
	}
}

// TestRefusalIsOneLine: each refused request is one line at debug, with
// what an operator needs (path, reason), also when authentication
// refuses it, and the line's message stays "request refused" (the
// answer's text under a key of its own: a second "msg" key in JSON hid
// it); a refusal the daemon is to blame for (a pod whose
// namespace file cannot be opened as one) is one warning carrying the
// error.
func TestRefusalIsOneLine(t *testing.T) {
	pk := newPKI(t)
	d := startDaemon(t, append(pk.daemonArgs(), "--allowed-client-groups", "ops")...)
	const n = 5
	for i := range n {
		if code, _ := pk.httpsGet(t, d, fmt.Sprintf("/portForward/ns/anonymous-%d", i), nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("no client certificate: %d, want 401", code)
		}
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ns_not-a-netns"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	plain := startDaemon(t, "--netns-dir", dir)
	resp, err := scrapeClient.Get(plain.url("/portForward/ns/not-a-netns"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("a pod whose netns file is a regular file: %s, want 500", resp.Status)
	}

	d.stop(t, 10*time.Second, "after the refusals")
	plain.stop(t, 10*time.Second, "after the refusal")
	for i := range n {
		path := fmt.Sprintf("/portForward/ns/anonymous-%d", i)
		var got []logRecord
		for _, r := range d.records() {
			if r.Path == path {
				got = append(got, r)
			}
		}
		if len(got) != 1 || got[0].Level != "DEBUG" || got[0].Msg != "request refused" ||
			got[0].Reason != "auth_no_credentials" || !strings.HasPrefix(got[0].Answer, "Unauthorized") {
			t.Errorf("a request refused for want of credentials: lines %+v, want one DEBUG \"request refused\" line with reason auth_no_credentials and the answer", got)
		}
	}
	var got []logRecord
	for _, r := range plain.records() {
		if r.Reason != "" || strings.Contains(r.Msg, "resolve") {
			got = append(got, r)
		}
	}
	if len(got) != 1 || got[0].Level != "WARN" || got[0].Msg != "request refused" || got[0].Reason != "resolve" || !strings.Contains(got[0].Err, "not-a-netns") {
		t.Errorf("a pod that cannot be resolved: lines %+v, want one WARN line with reason resolve and the error", got)
	}
}

// TestShutdownSaysWhatItWaitsFor: the shutdown line says how many
// sessions the drain waits for, and the line of a drain cut short by
// --drain-timeout how many it closed.
func TestShutdownSaysWhatItWaitsFor(t *testing.T) {
	d := startDaemon(t, "--drain-timeout", "300ms")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	go serveEcho(ln)
	f := startForward(t, d, transports[0], p.route(), port(ln))
	c := f.dial(t)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatalf("echo: %v", err)
	}
	d.stop(t, 10*time.Second, "with a session that outlives --drain-timeout")
	var shutdown, cut map[string]any
	for _, l := range d.logLines() {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) != nil {
			continue
		}
		switch rec["msg"] {
		case "shutting down":
			shutdown = rec
		case "drain cut short; remaining sessions were closed":
			cut = rec
		}
	}
	if shutdown["sessions"] != 1.0 {
		t.Errorf("shutdown line %v: want sessions=1", shutdown)
	}
	if cut["sessions"] != 1.0 {
		t.Errorf("drain-cut-short line %v: want sessions=1 (the one it closed)", cut)
	}
	// A warning, as the README says: a --log-level warn daemon still
	// tells of the sessions it cut (found by mutation testing: logging it
	// at info survived every test).
	if cut["level"] != "WARN" {
		t.Errorf("drain-cut-short line %v: want level WARN", cut)
	}
}

// TestDebugLogFollowsEachForward: at --log-level debug, a raw or HTTP/2
// forward (each its own session) can be followed from its start to its
// end: the session's lines carry a session id and the pod's port, and a
// "forward done" line with the same id gives the result and the bytes
// each way, also for two streams of one HTTP/2 connection, which share
// the remote address. The session's duration is written as a duration.
func TestDebugLogFollowsEachForward(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)

	c, br := dialConnectTCP(t, d, rawPath(p, port(ln)))
	c.Write([]byte("1234567"))
	c.CloseWrite()
	if b, err := io.ReadAll(br); err != nil || string(b) != "1234567" {
		t.Fatalf("raw echo: %q, %v", b, err)
	}
	client := h2Client()
	var wg sync.WaitGroup
	for _, payload := range []string{"abc", "abcde"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Post(h2URL(d, p, port(ln)), "application/octet-stream", strings.NewReader(payload))
			if err != nil {
				t.Errorf("h2 stream: %v", err)
				return
			}
			defer resp.Body.Close()
			if b, err := io.ReadAll(resp.Body); err != nil || string(b) != payload {
				t.Errorf("h2 echo: %q, %v; want %q", b, err, payload)
			}
		}()
	}
	wg.Wait()
	d.stop(t, 10*time.Second, "after the forwards")

	type session struct {
		protocol             string
		started, ended, done int
		up, down             float64
		result               any
	}
	sessions := map[float64]*session{}
	for _, l := range d.logLines() {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) != nil {
			continue
		}
		if rec["protocol"] != "raw" && rec["protocol"] != "h2" {
			continue
		}
		id, ok := rec["session"].(float64)
		if !ok {
			t.Errorf("a %s line without a session id: %s", rec["protocol"], l)
			continue
		}
		s := sessions[id]
		if s == nil {
			s = &session{protocol: rec["protocol"].(string)}
			sessions[id] = s
		}
		if p, ok := rec["port"].(float64); !ok || p != float64(port(ln)) {
			t.Errorf("a %s line without the pod's port %d: %s", s.protocol, port(ln), l)
		}
		switch rec["msg"] {
		case "session started":
			s.started++
		case "session ended":
			s.ended++
			if _, ok := rec["duration"].(string); !ok { // nanoseconds, as a number, read as 1e+06
				t.Errorf("session ended line's duration %v, want a duration such as \"1ms\"", rec["duration"])
			}
		case "forward done":
			s.done++
			s.up, _ = rec["up"].(float64)
			s.down, _ = rec["down"].(float64)
			s.result = rec["result"]
		}
	}
	got := map[string][]float64{}
	for id, s := range sessions {
		if s.started != 1 || s.ended != 1 || s.done != 1 || s.result != "ok" || s.up != s.down {
			t.Errorf("session %v (%s): %d started, %d ended, %d forward done lines, result %v, up %v, down %v; want one of each, ok, equal bytes",
				id, s.protocol, s.started, s.ended, s.done, s.result, s.up, s.down)
		}
		got[s.protocol] = append(got[s.protocol], s.up)
	}
	slices.Sort(got["h2"])
	if !slices.Equal(got["raw"], []float64{7}) || !slices.Equal(got["h2"], []float64{3, 5}) {
		t.Errorf("bytes up per session: %v, want raw [7], h2 [3 5]", got)
	}
}

// TestSIGHUPDoesNotStopTheDaemon: SIGHUP, which operators and log
// rotation scripts send to reload a daemon, neither kills it (Go's
// default for SIGHUP, which cut every forwarded connection without a
// drain or a log line) nor drains it: it says once why it changes
// nothing, and the daemon goes on serving.
func TestSIGHUPDoesNotStopTheDaemon(t *testing.T) {
	d := startDaemon(t)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		select {
		case <-d.exited:
			t.Fatalf("the daemon exited on SIGHUP: %v", d.exitErr)
		default:
		}
		for _, r := range d.records() {
			if strings.Contains(r.Msg, "SIGHUP") {
				return true, ""
			}
		}
		return false, "no line about SIGHUP"
	})
	resp, err := scrapeClient.Get("http://" + d.metricsAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz after SIGHUP: %s, want 200", resp.Status)
	}
	d.stop(t, 10*time.Second, "after SIGHUP")
}

// startDaemonLoggingToPipe starts the daemon with its log (JSON, at debug)
// on a pipe, and reads it until both listeners are up; r is the pipe's
// reader, sc its scanner to read on, exited closed once the daemon exits.
func startDaemonLoggingToPipe(t *testing.T) (d *daemon, cmd *exec.Cmd, exited chan struct{}, r *os.File, sc *bufio.Scanner) {
	t.Helper()
	requireE2E(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(daemonBin, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--log-format", "json", "--log-level", "debug")
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited = make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	d = &daemon{}
	sc = bufio.NewScanner(r)
	for (d.addr == "" || d.metricsAddr == "") && sc.Scan() {
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil {
			switch rec.Msg {
			case "serving port-forward":
				d.addr = rec.Addr
			case "serving metrics":
				d.metricsAddr = rec.Addr
			}
		}
	}
	if d.addr == "" || d.metricsAddr == "" {
		t.Fatalf("the daemon did not report its listeners: %v", sc.Err())
	}
	return d, cmd, exited, r, sc
}

// TestLogReaderGoneDoesNotStopTheDaemon: when whatever reads the daemon's
// log goes away (journald restarted, the container runtime's log pipe
// closed, a `| tee` that died), a log line is a write to a broken pipe.
// Go's default for that on stderr is to die of SIGPIPE, which cut every
// forwarded connection without a drain; the daemon must go on serving,
// and still drain and exit 0 on SIGTERM.
func TestLogReaderGoneDoesNotStopTheDaemon(t *testing.T) {
	requireE2E(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)

	d, cmd, exited, r, _ := startDaemonLoggingToPipe(t)
	r.Close()

	// A session logs "session started" before it forwards a byte.
	c, br := dialConnectTCP(t, d, rawPath(p, port(ln)))
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the daemon with its log reader gone: %q, %v", buf, err)
	}
	c.Close()
	resp, err := scrapeClient.Get("http://" + d.metricsAddr + "/readyz")
	if err != nil {
		t.Fatalf("/readyz with the log reader gone: %v", err)
	}
	resp.Body.Close()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not exit within 30s of SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit after SIGTERM: %v, want exit code 0", cmd.ProcessState)
	}
}

// TestStalledLogReaderDoesNotStopTheDaemon: a log reader that stops
// reading (journald stuck, a runtime's log pipe full) must not stop the
// daemon: each session logs "session started"
// before it forwards a byte, and a write to a full pipe blocks.
func TestStalledLogReaderDoesNotStopTheDaemon(t *testing.T) {
	requireE2E(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)

	// The log is not read from here on; its pipe stays open.
	d, cmd, exited, r, sc := startDaemonLoggingToPipe(t)
	defer r.Close()

	// Forward until the daemon has dropped log lines: far past what the
	// pipe (64 KiB) holds, where every forward used to block.
	const dropped = "portforwardd_log_lines_dropped_total"
	forwards := 0
	for ; d.metric(t, dropped) == 0; forwards++ {
		if forwards == 20000 {
			t.Fatalf("%d forwards logged at debug into a stalled reader, and no log line was dropped", forwards)
		}
		for range 50 {
			c, br := dialConnectTCP(t, d, rawPath(p, port(ln)))
			c.SetDeadline(time.Now().Add(30 * time.Second))
			buf := make([]byte, 4)
			if _, err := io.WriteString(c, "ping"); err != nil {
				t.Fatalf("forward %d with the log reader stalled: %v", forwards, err)
			}
			if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("forward %d with the log reader stalled: echo %q, %v", forwards, buf, err)
			}
			c.Close()
		}
	}
	lost := d.metric(t, dropped)
	t.Logf("%d forwards dropped %v log lines", forwards*50, lost)

	// The reader comes back: the log tells of the lines it lost, and
	// once it has, a SIGTERM's lines up to the last one get through.
	var told float64
	signaled, stopped := false, false
	for sc.Scan() {
		var rec struct {
			Msg   string  `json:"msg"`
			Level string  `json:"level"`
			Lines float64 `json:"lines"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		switch rec.Msg {
		case "log lines dropped: the log's reader fell behind":
			if rec.Level != "WARN" {
				t.Errorf("notice of dropped lines at %s, want WARN", rec.Level)
			}
			told += rec.Lines
		case "stopped":
			stopped = true
		}
		if told >= lost && !signaled {
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			signaled = true
		}
	}
	if told < lost {
		t.Errorf("the log tells of %v dropped lines; the daemon counted %v", told, lost)
	}
	if !stopped {
		t.Error("the log lost its last line, \"stopped\": the queue was not written out at exit")
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not exit within 30s of SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit after SIGTERM: %v, want exit code 0", cmd.ProcessState)
	}
}
