package streams

import (
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// tcpClose is TCP_CLOSE of the kernel's TCP states (tcp_states.h): the
// connection was reset, or timed out, and will carry nothing more.
const tcpClose = 7

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
	return ok && info.State == tcpClose
}

// tcpInfo returns the TCP_INFO of a TCP socket's RawConn.
func tcpInfo(rc syscall.RawConn) (*unix.TCPInfo, bool) {
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || gerr != nil {
		return nil, false
	}
	return info, true
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
	return info.Bytes_acked, true
}

// goneWatchEvery is how often WatchGone looks whether a peer has reset.
const goneWatchEvery = time.Second

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
// noticed by nothing else. stop waits for the watcher: no gone is called
// after it returns. Without a connection over TCP nothing is watched.
func WatchGone(ws ...Watched) (stop func()) {
	var tcp []Watched
	for _, w := range ws {
		if tcpConn(w.Conn) != nil {
			tcp = append(tcp, w)
		}
	}
	if len(tcp) == 0 {
		return func() {}
	}
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(goneWatchEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			for _, w := range tcp {
				if !w.FinSent.Load() && connGone(w.Conn) {
					w.Gone()
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}
