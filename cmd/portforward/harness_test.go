package main

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portforwardd/portforwardd/server"
)

// failAfter bounds every wait of these tests: it is how long an event may
// take before the test fails, never a pause that orders anything.
const failAfter = 10 * time.Second

// outBuf is a goroutine-safe output buffer that tells waiters about each
// write.
type outBuf struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced at each write
}

func newOutBuf() *outBuf { return &outBuf{changed: make(chan struct{})} }

func (o *outBuf) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	close(o.changed)
	o.changed = make(chan struct{})
	return o.b.Write(p)
}

func (o *outBuf) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// waitFor waits until cond holds for what was written, or until exited
// (if not nil) is closed, and returns the text; cond is checked once
// more after exited, so an output written just before exit counts.
func (o *outBuf) waitFor(t *testing.T, what string, exited <-chan struct{}, cond func(string) bool) (string, bool) {
	t.Helper()
	deadline := time.After(failAfter)
	for {
		o.mu.Lock()
		s, changed := o.b.String(), o.changed
		o.mu.Unlock()
		if cond(s) {
			return s, true
		}
		select {
		case <-changed:
		case <-exited:
			s := o.String()
			return s, cond(s)
		case <-deadline:
			t.Fatalf("no %s within %v; output so far: %q", what, failAfter, s)
		}
	}
}

// cliRun is the CLI run in-process by startCLI.
type cliRun struct {
	stdout, stderr *outBuf
	exited         chan struct{} // closed when run returns
	code           int           // run's result, once exited is closed
	stop           func()        // SIGINT
}

// startCLI runs the CLI with args in a goroutine. The test's cleanup
// stops it and waits for it to return.
func startCLI(t *testing.T, args ...string) *cliRun {
	t.Helper()
	stopc := make(chan struct{})
	var once sync.Once
	c := &cliRun{stdout: newOutBuf(), stderr: newOutBuf(), exited: make(chan struct{}),
		stop: func() { once.Do(func() { close(stopc) }) }}
	go func() {
		defer close(c.exited)
		c.code = run(args, c.stdout, c.stderr, stopc)
	}()
	t.Cleanup(func() { c.stopAndWait(t, args) })
	return c
}

// stopAndWait sends SIGINT and waits for the CLI to end; false (and a
// failed test) if it is still running after failAfter.
func (c *cliRun) stopAndWait(t *testing.T, args []string) bool {
	t.Helper()
	c.stop()
	select {
	case <-c.exited:
		return true
	case <-time.After(failAfter):
		t.Errorf("portforward %q still running %v after SIGINT", args, failAfter)
		return false
	}
}

// childArgsEnv carries, as JSON, the arguments of a CLI that this test
// binary, re-run by startCLIProcess, runs instead of its tests.
const childArgsEnv = "PORTFORWARD_TEST_CHILD_ARGS"

func TestMain(m *testing.M) {
	if js, ok := os.LookupEnv(childArgsEnv); ok {
		var args []string
		if err := json.Unmarshal([]byte(js), &args); err != nil {
			panic(err)
		}
		os.Args = append([]string{"portforward"}, args...)
		main()
	}
	os.Exit(m.Run())
}

// startCLIProcess runs the CLI with args in a process of its own (this
// test binary), for a test that limits its file descriptors: in the test
// process, connections that earlier tests left to goroutines (a fake
// daemon's handler, a forward the CLI's stop did not wait for, an idle
// connection of http.DefaultTransport whose server closed it) close at
// any moment, and free the descriptors the limit counted on. stop sends
// SIGINT; the test's cleanup sends it, then kills the process, and fails
// the test if the process reported a data race.
func startCLIProcess(t *testing.T, args ...string) (*cliRun, int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childArgsEnv+"="+string(js))
	c := &cliRun{stdout: newOutBuf(), stderr: newOutBuf(), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.stdout, c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.stop = func() { cmd.Process.Signal(syscall.SIGINT) }
	go func() {
		cmd.Wait()
		c.code = cmd.ProcessState.ExitCode()
		close(c.exited)
	}()
	t.Cleanup(func() {
		if !c.stopAndWait(t, args) {
			cmd.Process.Kill()
			<-c.exited
		}
		// Built with -race, the child reports races on its stderr, as
		// the test process would have failed the test.
		if strings.Contains(c.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("the CLI's process reported a data race; stderr %q", c.stderr)
		}
	})
	return c, cmd.Process.Pid
}

// exitCode waits for the CLI to return and gives its exit code.
func (c *cliRun) exitCode(t *testing.T, why string) int {
	t.Helper()
	select {
	case <-c.exited:
		return c.code
	case <-time.After(failAfter):
		t.Fatalf("portforward still running %v after %s; stdout %q, stderr %q", failAfter, why, c.stdout, c.stderr)
		return -1
	}
}

var forwardingRE = regexp.MustCompile(`(?m)^Forwarding from (\S+):(\d+) -> (\d+)$`)

// localPort waits for the first "Forwarding from" line and returns its
// local port.
func (c *cliRun) localPort(t *testing.T) string {
	t.Helper()
	out, ok := c.stdout.waitFor(t, `"Forwarding from" line`, c.exited, forwardingRE.MatchString)
	if !ok {
		t.Fatalf("portforward exited with %d before forwarding; stdout %q, stderr %q", c.code, out, c.stderr)
	}
	return forwardingRE.FindStringSubmatch(out)[2]
}

// fakeDaemon answers like portforwardd for any pod: OPTIONS lists
// connect-tcp and h2; a connect-tcp upgrade gets its 101 followed, in the
// same write, by greeting (what a pod server that talks first sends), then
// echoes; an HTTP/2 POST gets greeting and echoes its body. Each forward's
// request URI goes to uris. Forwards get 404 "pod does not exist" while
// podGone is set, 503 while busy counts down, and no answer while stall
// is set.
type fakeDaemon struct {
	*httptest.Server
	greeting string
	uris     chan string
	podGone  atomic.Bool
	busy     atomic.Int32
	stall    atomic.Bool
}

func startFakeDaemon(t *testing.T, greeting string) *fakeDaemon {
	t.Helper()
	d := &fakeDaemon{greeting: greeting, uris: make(chan string, 100)}
	d.Server = httptest.NewUnstartedServer(http.HandlerFunc(d.serve))
	d.Config.Protocols = new(http.Protocols)
	d.Config.Protocols.SetHTTP1(true)
	d.Config.Protocols.SetUnencryptedHTTP2(true)
	d.Start()
	t.Cleanup(d.Close)
	return d
}

func (d *fakeDaemon) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodOptions:
		w.Header().Set(server.HeaderTransports, "connect-tcp, h2")
		w.WriteHeader(http.StatusNoContent)
	case d.podGone.Load():
		http.Error(w, "pod does not exist", http.StatusNotFound)
	case d.busy.Add(-1) >= 0:
		http.Error(w, "too many sessions", http.StatusServiceUnavailable)
	case d.stall.Load():
		d.uris <- r.RequestURI
		<-r.Context().Done()
	case r.Header.Get("Upgrade") == "connect-tcp":
		d.uris <- r.RequestURI
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n"+d.greeting); err != nil {
			return
		}
		io.Copy(c, brw.Reader)
	case r.Method == http.MethodPost && r.ProtoMajor == 2:
		d.uris <- r.RequestURI
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		rc.Flush()
		io.WriteString(w, d.greeting)
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				rc.Flush()
			}
			if err != nil {
				return
			}
		}
	default:
		http.Error(w, "unexpected request", http.StatusBadRequest)
	}
}

// echoOnce sends msg on a new connection to 127.0.0.1:port and reads it
// back after want.
func echoOnce(t *testing.T, port, want, msg string) {
	t.Helper()
	c, err := net.Dial("tcp4", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(failAfter))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want)+len(msg))
	if n, err := io.ReadFull(c, got); err != nil || string(got) != want+msg {
		t.Fatalf("through port %s: read %q, %v; want %q", port, got[:n], err, want+msg)
	}
}

// freePorts returns n different ports that nothing listens on, on any
// address. Servers the test needs are started first, so that they cannot
// take these ports.
//
// They come from below the kernel's ephemeral range (32768 and up by
// default), so that no outgoing connection of a test running meanwhile
// (the e2e package runs beside this one) takes one as its local port
// between the choice and the CLI's bind.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var ports []string
	for p := 20000 + rand.IntN(10000); len(ports) < n; p++ {
		if p >= 32768 {
			t.Fatalf("no %d free ports below 32768", n)
		}
		ln, err := net.Listen("tcp", "[::]:"+strconv.Itoa(p)) // dual stack: free on both families
		if err != nil {
			continue
		}
		defer ln.Close() // held until all are chosen, so that they differ
		ports = append(ports, strconv.Itoa(p))
	}
	return ports
}

// lines splits output into its lines.
func lines(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }
