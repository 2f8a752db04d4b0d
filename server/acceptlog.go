package server

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/portforwardd/portforwardd/nsenter"
)

// acceptCalm is how long a listener in a shortage episode must go
// without a failed accept for the episode to be over: longer than the 1 s
// net/http (and gRPC) wait at most between accept retries, so that
// clients waiting in the listen queue keep it going. A retry that meets
// no failure has accepted, or waits for a client with descriptors free.
const acceptCalm = 5 * time.Second

// acceptShortage tells the log when a listener cannot accept for want of
// file descriptors or memory: its server retries (5 ms to 1 s apart) and
// says so at debug at most, while clients wait in the listen queue with
// no answer. One warning when an episode starts, and one line when it is
// over: a daemon at its limit whose clients keep coming accepts one each
// time a descriptor comes free, and fails again at once, and that is all
// one episode, however many connections it let in.
type acceptShortage struct {
	log      *slog.Logger
	listener string // the listener's flag, for the log

	mu       sync.Mutex
	start    time.Time // the episode's first failure; zero between episodes
	lastFail time.Time
	failures int
	calm     *time.Timer // looks whether the episode is over
	closed   bool
}

func newAcceptShortage(log *slog.Logger, listener string) *acceptShortage {
	return &acceptShortage{log: log, listener: listener}
}

// failed records a failed accept, and returns the error for the server:
// a shortage as a temporary error, so that the server waits and accepts
// again. Go marks EMFILE and ENFILE temporary, but not ENOBUFS or ENOMEM,
// on which net/http's and gRPC's Serve return and the listener stops for
// good, though the kernel has memory again a moment later.
func (a *acceptShortage) failed(err error) error {
	if nsenter.Shortage(err) == 0 {
		return err
	}
	defer a.note(err)
	return shortageError{err}
}

// shortageError is an accept's failure for want of a resource: temporary,
// as net/http and gRPC ask of a net.Error (by a type assertion, so it
// cannot be wrapped further).
type shortageError struct{ error }

func (shortageError) Temporary() bool { return true }
func (shortageError) Timeout() bool   { return false }
func (e shortageError) Unwrap() error { return e.error }

// note counts a failed accept in its episode, and starts one if none is
// under way.
func (a *acceptShortage) note(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	a.lastFail = now
	a.failures++
	if !a.start.IsZero() || a.closed {
		return
	}
	a.start, a.failures = now, 1
	a.calm = time.AfterFunc(acceptCalm, a.settle)
	a.log.Warn("cannot accept connections: out of file descriptors or memory; clients wait until some are free",
		"listener", a.listener, "err", err)
}

// settle ends the episode once no accept has failed for acceptCalm.
func (a *acceptShortage) settle() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	if wait := acceptCalm - time.Since(a.lastFail); wait > 0 {
		a.calm.Reset(wait)
		return
	}
	a.log.Info("accepting connections again", "listener", a.listener,
		"failed_accepts", a.failures, "duration", a.lastFail.Sub(a.start).Round(time.Millisecond).String())
	a.start, a.calm = time.Time{}, nil
}

// close ends the watch with the listener: a closed listener accepts
// nothing, again or not.
func (a *acceptShortage) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	if a.calm != nil {
		a.calm.Stop()
	}
}

// shortageListener is a listener whose accept failures for want of a
// resource are logged by an acceptShortage.
type shortageListener struct {
	net.Listener
	a *acceptShortage
}

// WarnAcceptShortage wraps ln so that the log says, once per episode,
// when it cannot accept for want of file descriptors or memory, and when
// it accepts again; listener names it in the log (its flag).
func WarnAcceptShortage(ln net.Listener, log *slog.Logger, listener string) net.Listener {
	return &shortageListener{Listener: ln, a: newAcceptShortage(log, listener)}
}

func (l *shortageListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, l.a.failed(err)
	}
	return c, nil
}

func (l *shortageListener) Close() error {
	l.a.close()
	return l.Listener.Close()
}
