package main

import (
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stepListener answers each Accept with its next step: an error, or a
// connection from the real listener under it; then it is closed.
type stepListener struct {
	net.Listener
	steps []error // nil: accept a connection
}

func (l *stepListener) Accept() (net.Conn, error) {
	if len(l.steps) == 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	}
	err := l.steps[0]
	l.steps = l.steps[1:]
	if err != nil {
		return nil, err
	}
	return l.Listener.Accept()
}

// lockedBuilder is a strings.Builder the accept loop and the forwards
// may write at once.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedBuilder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuilder) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestAcceptFailureAfterAConnectionIsReportedAgain: an accept failure
// that comes after a connection was accepted is a new episode, reported
// again (and retried from the shortest back-off), not one the user never
// hears of because an earlier episode was reported.
func TestAcceptFailureAfterAConnectionIsReportedAgain(t *testing.T) {
	d := startFakeDaemon(t, "")
	base, err := url.Parse(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	under, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer under.Close()
	client, err := net.Dial("tcp4", under.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client.Close() // its forward ends at once, after its upgrade
	var stderr lockedBuilder
	f := &rawForwarder{base: base, namespace: "ns", pod: "pod", stderr: &stderr, lost: make(chan struct{})}
	ln := &stepListener{Listener: under, steps: []error{
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EPERM)},
		nil,
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EPROTO)},
	}}
	done := make(chan struct{})
	go func() {
		f.accept(ln, 5000, 80, io.Discard)
		f.active.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(failAfter):
		t.Fatalf("the accept loop did not end within %v", failAfter)
	}
	want := "error accepting connection on port 5000: accept tcp: accept4: operation not permitted; trying again\n" +
		"error accepting connection on port 5000: accept tcp: accept4: protocol error; trying again\n"
	if got := stderr.String(); got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}
