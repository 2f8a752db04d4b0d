package main

import (
	"errors"
	"syscall"
)

// localShortage reports whether a dial or an accept failed for want of
// something of this host's (file descriptors, ephemeral ports, memory)
// rather than because the server could not be reached or the listener was
// closed: a dial's connection fails, as for a 503, and the forward goes
// on; an accept is tried again. Many local connections at once, each with
// its own connection to the server (raw), can run short of these.
func localShortage(err error) bool { return shortageIn(err, shortageErrnos) }

// shortageIn reports whether err is, or wraps, one of errnos.
func shortageIn(err error, errnos []syscall.Errno) bool {
	for _, errno := range errnos {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// unixShortages are the shortages' errnos on Linux and macOS, whose
// syscall packages define them with the kernel's numbers.
var unixShortages = []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.EADDRNOTAVAIL, syscall.ENOBUFS, syscall.ENOMEM}

// Winsock's counterparts of unixShortages (it has no ENFILE), by number,
// so that a test on any OS can check them; golang.org/x/sys/windows's
// names for them (zerrors_windows.go) are checked against these numbers
// when the CLI is built for Windows (shortage_windows.go).
const (
	errNotEnoughMemory syscall.Errno = 8     // ERROR_NOT_ENOUGH_MEMORY, Winsock's WSA_NOT_ENOUGH_MEMORY
	wsaEMFILE          syscall.Errno = 10024 // WSAEMFILE
	wsaEADDRNOTAVAIL   syscall.Errno = 10049 // WSAEADDRNOTAVAIL
	wsaENOBUFS         syscall.Errno = 10055 // WSAENOBUFS
)

// winsockShortages are the shortages' errnos on Windows. There Go's
// syscall package defines EMFILE, ENOBUFS and the others as numbers of its
// own (APPLICATION_ERROR + n: syscall/zerrors_windows.go), which no system
// call returns (net/error_windows_test.go says as much of ENOBUFS): the
// net package hands on the call's last-error number as a syscall.Errno
// (errnoErr, in syscall/zsyscall_windows.go and
// internal/syscall/windows/zsyscall_windows.go, returns it unchanged),
// wrapped in an *os.SyscallError ("socket" for the socket an accept or a
// dial makes, net/sock_windows.go's sysSocket; "acceptex"; "bind" and
// "connectex" for a dial, net/fd_windows.go) and a *net.OpError.
var winsockShortages = []syscall.Errno{wsaEMFILE, wsaEADDRNOTAVAIL, wsaENOBUFS, errNotEnoughMemory}
