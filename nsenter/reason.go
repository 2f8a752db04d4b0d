package nsenter

import (
	"context"
	"errors"
	"net"
	"syscall"
)

// Reason classifies a Resolve or Dial error into a small fixed set of
// words, for metric labels: "refused", "timeout", "unreachable",
// "netns_gone", "not_netns", "not_found", "invalid_pod", "canceled" or
// "other". A dial that could not create a socket for want of a local
// resource (file descriptors, memory) is "other", the daemon's failure,
// whatever the other loopback address answered: a pod listening on
// 127.0.0.1 only refuses [::1], and "refused" is the users' business. So
// is a dial one address of which timed out "timeout" (a pod dropping SYNs
// on 127.0.0.1, its accept queue full, refuses [::1] all the same). A
// pod out of ephemeral ports toward 127.0.0.1 (connect(2) says
// EADDRNOTAVAIL, there being no other reason it can on 127.0.0.1) is
// "other" too: the ports are the daemon's own connections into the pod,
// not a port the pod fails to serve, whatever [::1] answered.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNetnsGone):
		return "netns_gone"
	case errors.Is(err, ErrPodNotFound):
		return "not_found"
	case errors.Is(err, ErrNotNetns):
		return "not_netns"
	case errors.Is(err, ErrInvalidPod):
		return "invalid_pod"
	case Shortage(err) != 0, outOfPorts(err):
		return "other"
	case timedOut(err):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EADDRNOTAVAIL):
		return "unreachable"
	default:
		return "other"
	}
}

// outOfPorts reports whether err is a dial whose connect to 127.0.0.1
// found no ephemeral port free.
func outOfPorts(err error) bool {
	var e interface{ outOfPorts() bool }
	return errors.As(err, &e) && e.outOfPorts()
}

// timedOut reports whether any error in err's tree timed out. errors.As
// would stop at the first net.Error, the other address's (a *LoopbackError
// holds both).
func timedOut(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return timedOut(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if timedOut(e) {
				return true
			}
		}
	}
	return false
}

// Shortage returns the errno in err of a local resource the daemon ran
// out of (EMFILE, ENFILE, ENOBUFS or ENOMEM: no file descriptor or memory
// for a namespace handle or a socket), or 0 when err is no such failure.
func Shortage(err error) syscall.Errno {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, errno) {
			return errno
		}
	}
	return 0
}
