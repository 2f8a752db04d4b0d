package streams

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpClose is TCP_CLOSE of the kernel's TCP states (tcp_states.h): the
// connection was reset, or timed out, and will carry nothing more.
const tcpClose = 7

// connGone reports whether the TCP connection under c (unwrapping TLS and
// other wrappers with a NetConn method) has ended by a reset or a timeout.
// A FIN alone is not an end: the client may be waiting for the pods.
func connGone(c net.Conn) bool {
	for {
		if _, ok := c.(*net.TCPConn); ok {
			break
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return false
		}
		c = u.NetConn()
	}
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return true // closed
	}
	gone := false
	rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		gone = err == nil && info.State == tcpClose
	})
	return gone
}
