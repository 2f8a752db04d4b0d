package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
)

// TestLocalShortageOnWindows: an accept or a dial that fails for want of
// sockets, buffers or memory on Windows is a shortage. Go reports it
// there as Winsock's number in an *os.SyscallError in a *net.OpError (the
// errors are built here as net/fd_windows.go and net/sock_windows.go
// build them), which the syscall package's EMFILE, ENOBUFS and the others
// (invented numbers on Windows) never matched: an accept loop stopped for
// good, and a dial lost the pod.
func TestLocalShortageOnWindows(t *testing.T) {
	accept := func(call string, errno syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}, Err: os.NewSyscallError(call, errno)}
	}
	dial := func(call string, errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 10350}, Err: os.NewSyscallError(call, errno)}
	}
	h2 := func(err error) error { // http.Client.Do's error
		return &url.Error{Op: "Post", URL: "http://10.0.0.1:10350/portForward/ns/pod?port=22", Err: err}
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{accept("socket", 10024), true},    // WSAEMFILE
		{accept("socket", 10055), true},    // WSAENOBUFS
		{accept("acceptex", 10055), true},  // WSAENOBUFS
		{accept("acceptex", 8), true},      // ERROR_NOT_ENOUGH_MEMORY
		{dial("socket", 10024), true},      // WSAEMFILE
		{dial("bind", 10055), true},        // WSAENOBUFS: no ephemeral port
		{dial("connectex", 10049), true},   // WSAEADDRNOTAVAIL
		{h2(dial("bind", 10055)), true},    // WSAENOBUFS
		{dial("connectex", 10061), false},  // WSAECONNREFUSED: the server is down
		{dial("connectex", 10060), false},  // WSAETIMEDOUT
		{dial("connectex", 10065), false},  // WSAEHOSTUNREACH
		{accept("acceptex", 10054), false}, // WSAECONNRESET
		{fmt.Errorf("accept: %w", net.ErrClosed), false},
	} {
		if got := shortageIn(tc.err, winsockShortages); got != tc.want {
			t.Errorf("%v: shortage %v, want %v", tc.err, got, tc.want)
		}
		if tc.want && shortageIn(tc.err, unixShortages) {
			t.Errorf("%v: a shortage by the Unix errnos too; the test shows nothing", tc.err)
		}
	}
}

// TestLocalShortageOnUnix: the Unix errnos stay shortages, wrapped as Go
// wraps them on Linux and macOS, and the other errors do not.
func TestLocalShortageOnUnix(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept", syscall.ENFILE)}, true},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}, true},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("socket", syscall.ENOBUFS)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENOMEM)}, true},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, false},
		{fmt.Errorf("accept: %w", net.ErrClosed), false},
	} {
		if got := shortageIn(tc.err, unixShortages); got != tc.want {
			t.Errorf("%v: shortage %v, want %v", tc.err, got, tc.want)
		}
	}
}
