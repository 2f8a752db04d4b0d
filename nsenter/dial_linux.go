package nsenter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// DefaultDialTimeout bounds each connect attempt. Neither CRI-O nor
// containerd sets one, so a pod that drops SYNs hangs their dial for about
// two minutes of SYN retries; ten seconds is far beyond any loopback connect.
const DefaultDialTimeout = 10 * time.Second

// Dialer connects to a port on a pod's loopback. Its zero value is usable.
type Dialer struct {
	// Timeout bounds each of the two connect attempts; zero means
	// DefaultDialTimeout.
	Timeout time.Duration
}

func (d Dialer) timeout() time.Duration {
	if d.Timeout <= 0 {
		return DefaultDialTimeout
	}
	return d.Timeout
}

type dialResult struct {
	conn *net.TCPConn
	err  error
}

// Dial connects to 127.0.0.1:port and, if that fails (but for want of a
// file descriptor or memory, see Shortage), to [::1]:port inside t's
// network namespace. The returned connection belongs to the caller.
func (d Dialer) Dial(ctx context.Context, t Target, port uint16) (*net.TCPConn, error) {
	target, err := openTarget(t)
	if err != nil {
		return nil, err
	}
	defer target.Close()

	ch := make(chan dialResult, 1)
	go dialInNetns(ctx, target, t.Path, port, d.timeout(), ch)
	r := <-ch
	return r.conn, r.err
}

// ownNetns is the daemon's own network namespace, opened once on a thread
// locked for the purpose: only locked threads ever leave it, and they return
// before unlocking, so the thread is in it.
var ownNetns = sync.OnceValues(func() (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h, err := netns.Get()
	if err != nil {
		return netns.None(), fmt.Errorf("get own netns: %w", err)
	}
	return h, nil
})

// Prepare opens the handle of the daemon's own network namespace, which
// every dial returns to, and keeps it for the life of the process. Call it
// once at startup, so that a missing /proc fails the start rather than the
// first dial; Dial calls it too.
func Prepare() error {
	_, err := ownNetns()
	return err
}

// dialInNetns is the only code that enters a pod's network namespace. It
// is a named function so that it is recognisable in stack dumps. It tries
// 127.0.0.1 and then [::1]. If the thread cannot return to the daemon's own
// namespace the goroutine ends still locked, and the runtime terminates the
// thread with it; every fd is closed before the result is sent, so the
// caller never sees one still open.
func dialInNetns(ctx context.Context, target netns.NsHandle, path string, port uint16, timeout time.Duration, ch chan<- dialResult) {
	own, err := ownNetns()
	if err != nil {
		ch <- dialResult{err: err}
		return
	}
	p := strconv.Itoa(int(port))
	var errs [2]error
	for i, addr := range [2]struct{ network, host string }{{"tcp4", "127.0.0.1"}, {"tcp6", "::1"}} {
		c, err := dialIn(ctx, target, own, addr.network, net.JoinHostPort(addr.host, p), timeout)
		if err == nil {
			ch <- dialResult{conn: c}
			return
		}
		if errors.Is(err, errStuck) {
			ch <- dialResult{err: fmt.Errorf("netns %s: %w", path, err)}
			return // still locked
		}
		if Shortage(err) != 0 {
			// The daemon, not the pod, lacks a descriptor or memory:
			// [::1] would fail the same way or, given one freed
			// meanwhile, be refused by a pod on 127.0.0.1 only and
			// blame the pod.
			ch <- dialResult{err: fmt.Errorf("netns %s: %w", path, err)}
			return
		}
		errs[i] = err
	}
	ch <- dialResult{err: fmt.Errorf("netns %s: %w", path, &LoopbackError{Port: port, IPv4: errs[0], IPv6: errs[1]})}
}

// errStuck marks a thread that could not leave the pod's namespace.
var errStuck = errors.New("cannot return to the daemon's network namespace")

// dialIn connects to addr (an IP literal, so the net package neither
// resolves a name nor races addresses on other goroutines) with the socket
// created inside target. A socket belongs to the namespace it was created
// in, so the thread returns to own as soon as socket(2) has run, in the
// dialer's Control hook, and waits for the connect unlocked: no thread sits
// in a pod's namespace, or is pinned, while a handshake is in flight.
// On errStuck the calling goroutine is left locked to its thread.
//
// Go's dialer makes a new socket and connects again when connect(2)
// fails with EADDRNOTAVAIL (the pod's ephemeral ports toward addr are all
// taken, or it has no such address: ::1 with IPv6 off) or the socket
// connected to itself; it does so up to twice, and by then the thread
// has left the pod's namespace, so that socket would be the daemon's and
// connect to the node's own loopback. Control refuses it (errOutside), and
// dialIn tries again itself, inside target, as often as Go would. The
// dialer makes no MPTCP socket, whose failure Go follows with a plain one.
func dialIn(ctx context.Context, target, own netns.NsHandle, network, addr string, timeout time.Duration) (*net.TCPConn, error) {
	const tries = 3 // Go's dialer: the first connect and two more
	for try := 1; ; try++ {
		c, err := dialOnce(ctx, target, own, network, addr, timeout)
		if !errors.Is(err, errOutside) {
			return c, err
		}
		if try == tries || ctx.Err() != nil {
			// What made Go try again, as far as can be told: a
			// socket connected to itself thrice in a row is not seen.
			var oe *net.OpError
			if errors.As(err, &oe) {
				e := *oe
				e.Err = os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)
				return nil, &e
			}
			return nil, err
		}
	}
}

// errOutside is Control's answer to a second socket of one dial, made
// outside the pod's namespace.
var errOutside = errors.New("a socket made outside the pod's network namespace")

// dialOnce is one attempt of dialIn, with one socket made inside target.
func dialOnce(ctx context.Context, target, own netns.NsHandle, network, addr string, timeout time.Duration) (*net.TCPConn, error) {
	runtime.LockOSThread()
	if err := netns.Set(target); err != nil {
		// A failed setns leaves the thread where it was.
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter netns: %w", err)
	}
	inside := true
	var stuck error
	leave := func() error {
		if err := netns.Set(own); err != nil {
			stuck = fmt.Errorf("%w: %w", errStuck, err)
			return stuck
		}
		inside = false
		runtime.UnlockOSThread()
		return nil
	}
	made := false
	d := net.Dialer{
		Timeout:       timeout,
		FallbackDelay: -1,
		// Control runs on this goroutine, once for each socket the
		// dialer makes.
		Control: func(string, string, syscall.RawConn) error {
			if made {
				return errOutside
			}
			made = true
			return leave()
		},
	}
	// With MPTCP (GODEBUG=multipathtcp=1 or 3), a failed connect is
	// tried again with a plain TCP socket, a second one, which Control
	// refuses: a port the pod does not serve would not be "refused".
	d.SetMultipathTCP(false)
	c, err := d.DialContext(ctx, network, addr)
	if inside && stuck == nil {
		// socket(2) itself failed, so Control never ran.
		leave()
	}
	if stuck != nil {
		if c != nil {
			c.Close()
		}
		return nil, stuck
	}
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// LoopbackError is a failed dial of both loopback addresses.
type LoopbackError struct {
	Port       uint16
	IPv4, IPv6 error
}

func (e *LoopbackError) Error() string {
	return fmt.Sprintf("dial localhost:%d: IPv4: %v; IPv6: %v", e.Port, e.IPv4, e.IPv6)
}

// Unwrap lets errors.Is see both causes (for example syscall.ECONNREFUSED).
func (e *LoopbackError) Unwrap() []error { return []error{e.IPv4, e.IPv6} }

// outOfPorts reports whether 127.0.0.1 failed for want of an ephemeral
// port: connect(2)'s EADDRNOTAVAIL, as the address itself is always there.
func (e *LoopbackError) outOfPorts() bool { return errors.Is(e.IPv4, syscall.EADDRNOTAVAIL) }
