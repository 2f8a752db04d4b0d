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
// 127.0.0.1 only refuses [::1], and "refused" is the users' business.
func Reason(err error) string {
	var ne net.Error
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
	case Shortage(err) != 0:
		return "other"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EADDRNOTAVAIL):
		return "unreachable"
	default:
		return "other"
	}
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
