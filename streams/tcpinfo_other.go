//go:build !linux

package streams

import (
	"net"
	"syscall"
)

// haveTCPInfo says tcpInfo can tell.
const haveTCPInfo = false

// tcpInfo tells nothing off Linux, which has no TCP_INFO of this shape:
// the watches see no reset and no progress, and a forward there ends by
// what its reads and writes see, as the daemon's dependencies (net/http,
// client-go) do.
func tcpInfo(syscall.RawConn) (tcpState, bool) { return tcpState{}, false }

// unsent reports false off Linux, which has no SIOCOUTQ.
func unsent(*net.TCPConn) bool { return false }
