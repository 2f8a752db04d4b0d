package nsenter

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
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

// Dial connects to 127.0.0.1:port and, if that fails, to [::1]:port inside
// t's network namespace. The returned connection belongs to the caller.
func (d Dialer) Dial(ctx context.Context, t Target, port uint16) (*net.TCPConn, error) {
	target, err := openNetns(t.Path)
	if err != nil {
		return nil, err
	}
	defer target.Close()

	ch := make(chan dialResult, 1)
	go dialInNetns(ctx, target, t.Path, port, d.timeout(), ch)
	r := <-ch
	return r.conn, r.err
}

// dialInNetns is the only code that runs inside a pod's network namespace.
// It is a named function so that it is recognisable in stack dumps.
func dialInNetns(ctx context.Context, target netns.NsHandle, path string, port uint16, timeout time.Duration, ch chan<- dialResult) {
	runtime.LockOSThread()
	// No deferred UnlockOSThread: a thread that cannot return to its own
	// namespace must die with this goroutine. Every fd is closed before the
	// result is sent, so the caller never sees one still open.
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		ch <- dialResult{err: fmt.Errorf("get current netns: %w", err)}
		return
	}
	if err := netns.Set(target); err != nil {
		// A failed setns leaves the thread where it was.
		orig.Close()
		runtime.UnlockOSThread()
		ch <- dialResult{err: fmt.Errorf("enter netns %s: %w", path, err)}
		return
	}
	conn, dialErr := dialLoopback(ctx, port, timeout)
	backErr := netns.Set(orig)
	orig.Close()
	if backErr != nil {
		if conn != nil {
			conn.Close()
		}
		ch <- dialResult{err: fmt.Errorf("leave netns %s: %w", path, backErr)}
		return // still locked: the runtime terminates this thread
	}
	runtime.UnlockOSThread()
	if dialErr != nil {
		dialErr = fmt.Errorf("netns %s: %w", path, dialErr)
	}
	ch <- dialResult{conn: conn, err: dialErr}
}

// dialLoopback tries the IPv4 and then the IPv6 loopback on the calling
// goroutine. With an IP literal the net package neither resolves a name nor
// races addresses on other goroutines (golang/go#44922), so the socket is
// created on this thread, in its current namespace.
func dialLoopback(ctx context.Context, port uint16, timeout time.Duration) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: timeout, FallbackDelay: -1}
	p := strconv.Itoa(int(port))
	c4, err4 := d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", p))
	if err4 == nil {
		return c4.(*net.TCPConn), nil
	}
	c6, err6 := d.DialContext(ctx, "tcp6", net.JoinHostPort("::1", p))
	if err6 == nil {
		return c6.(*net.TCPConn), nil
	}
	return nil, &LoopbackError{Port: port, IPv4: err4, IPv6: err6}
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
