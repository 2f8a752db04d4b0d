package streams

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// tcpConn returns the *net.TCPConn under c, unwrapping TLS and other
// wrappers with a NetConn method, or nil when there is none.
func tcpConn(c net.Conn) *net.TCPConn {
	for {
		if tc, ok := c.(*net.TCPConn); ok {
			return tc
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = u.NetConn()
	}
}

// connGone reports whether the TCP connection under c (unwrapping TLS and
// other wrappers with a NetConn method) has ended by a reset or a timeout.
// A FIN alone is not an end: the client may be waiting for the pods.
func connGone(c net.Conn) bool {
	tc := tcpConn(c)
	if tc == nil {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return true // closed
	}
	info, ok := tcpInfo(rc)
	return ok && info.closed
}

// tcpState is what the watches read of a TCP socket's TCP_INFO (Linux).
type tcpState struct {
	closed          bool   // TCP_CLOSE: reset, or timed out
	acked, received uint64 // bytes_acked, bytes_received
}

// AckedBytes returns the bytes the TCP connection under c (unwrapping TLS
// and other wrappers with a NetConn method) has had acknowledged by its
// peer (TCP_INFO bytes_acked): they grow as the peer reads and opens its
// window, also while a write to it has not returned. False when that
// cannot be told.
func AckedBytes(c net.Conn) (uint64, bool) {
	tc := tcpConn(c)
	if tc == nil {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	return rawAckedBytes(rc)
}

// rawAckedBytes is AckedBytes of a TCP socket's RawConn.
func rawAckedBytes(rc syscall.RawConn) (uint64, bool) {
	info, ok := tcpInfo(rc)
	if !ok {
		return 0, false
	}
	return info.acked, true
}

// goneWatchEvery is how often WatchGone looks whether a peer has reset,
// and Watch whether a forward has moved bytes.
const goneWatchEvery = time.Second

// ErrIdle is the cause of a forward that Watch found idle: no byte moved
// either way for the idle timeout.
var ErrIdle = errors.New("idle timeout")

// idleError is the cause of a forward found idle for idle.
func idleError(idle time.Duration) error {
	return fmt.Errorf("no byte either way for %v: %w", idle, ErrIdle)
}

// Watched is a connection of a forward that WatchGone looks at: Conn,
// until FinSent says it was sent our FIN (from then on TCP_CLOSE may be
// the end of an orderly close, and the direction reading Conn sees a
// reset by itself); Gone is called when it was reset or timed out.
type Watched struct {
	Conn    net.Conn
	FinSent *atomic.Bool
	Gone    func()
}

// WatchGone looks at each of ws every goneWatchEvery, until stop is
// called or one of them is gone, whose gone it then calls. A forward reads
// or writes a connection only while its peer or the other peer acts: a
// peer that resets after its FIN, or while the other does not read, is
// noticed by nothing else. stop waits for a look under way: no gone is
// called after it returns. Without a connection over TCP, or off Linux,
// nothing is watched.
func WatchGone(ws ...Watched) (stop func()) {
	return Watch(0, nil, ws...)
}

// Watch is WatchGone that also calls idled, and stops, when idle is
// positive and none of ws's TCP connections has received a byte or had
// one acknowledged (TCP_INFO bytes_received and bytes_acked; keep-alive
// probes move neither) for idle, as seen every goneWatchEvery: a forward
// with no framing of its own (raw, one HTTP/2 stream) is idle when its
// sockets are. A connection stays in the idle count after its FIN. The
// looks run on a timer, so a forward costs no goroutine of its own for
// this, nor a handoff to one at its end.
func Watch(idle time.Duration, idled func(), ws ...Watched) (stop func()) {
	g := &watch{idle: idle, idled: idled}
	for _, w := range ws {
		// Off Linux there is no TCP_INFO to look at: a socket would never
		// move, and look idle.
		if tc := tcpConn(w.Conn); tc != nil && haveTCPInfo {
			if rc, err := tc.SyscallConn(); err == nil {
				g.ws = append(g.ws, watchedTCP{w, rc})
			}
		}
	}
	if len(g.ws) == 0 {
		return func() {}
	}
	g.mu.Lock()
	g.timer = time.AfterFunc(goneWatchEvery, g.look)
	g.mu.Unlock()
	return g.stop
}

// watchedTCP is a Watched over TCP, with its socket.
type watchedTCP struct {
	Watched
	rc syscall.RawConn
}

// watch is the state of one Watch.
type watch struct {
	ws    []watchedTCP
	idle  time.Duration
	idled func()

	mu      sync.Mutex // held while looking, so stop waits for a look
	timer   *time.Timer
	stopped bool      // by stop, or after a gone or idled
	moved   uint64    // the sockets' bytes at movedAt
	movedAt time.Time // when moved last changed; zero before the first look
}

func (g *watch) look() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	var moved uint64
	for _, w := range g.ws {
		info, ok := tcpInfo(w.rc)
		if !ok {
			continue // closed under us: the forward is ending
		}
		if !w.FinSent.Load() && info.closed {
			g.stopped = true
			w.Gone()
			return
		}
		moved += info.acked + info.received
	}
	if g.idle > 0 {
		now := time.Now()
		switch {
		case g.movedAt.IsZero() || moved != g.moved:
			g.moved, g.movedAt = moved, now
		case now.Sub(g.movedAt) >= g.idle:
			g.stopped = true
			g.idled()
			return
		}
	}
	g.timer.Reset(goneWatchEvery)
}

func (g *watch) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	g.timer.Stop()
}
