package streams

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpClose is TCP_CLOSE of the kernel's TCP states (tcp_states.h): the
// connection was reset, or timed out, and will carry nothing more.
const tcpClose = 7

// haveTCPInfo says tcpInfo can tell.
const haveTCPInfo = true

// tcpInfo returns what the watches use of the TCP_INFO of a TCP socket's
// RawConn.
func tcpInfo(rc syscall.RawConn) (tcpState, bool) {
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || gerr != nil {
		return tcpState{}, false
	}
	return tcpState{closed: info.State == tcpClose, acked: info.Bytes_acked, received: info.Bytes_received}, true
}

// unsent reports whether bytes wait in tc's send queue. Closed with bytes
// queued, a socket stays in the kernel, holding up to its send buffer,
// until its peer reads them: a pod that never reads would pin it for good.
func unsent(tc *net.TCPConn) bool {
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	queued := 0
	rc.Control(func(fd uintptr) { queued, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
	return queued > 0
}
