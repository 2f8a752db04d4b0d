package nsenter

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
)

// TestReasonLocalShortageIsTheDaemons: a dial whose socket could not be
// created for want of a local resource failed in the daemon, whatever the
// other address answered. The first case is what a daemon at its
// RLIMIT_NOFILE produced: 127.0.0.1's socket(2) failed with EMFILE, an fd
// was freed meanwhile, and the pod, listening on 127.0.0.1 only, refused
// [::1]. Counted as "refused", which alerts leave to the users, the
// daemon's shortage went unseen.
func TestReasonLocalShortageIsTheDaemons(t *testing.T) {
	dial := func(network, addr, op string, errno error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: &net.TCPAddr{IP: net.ParseIP(addr), Port: 8080},
			Err: os.NewSyscallError(op, errno)}
	}
	refused := dial("tcp6", "::1", "connect", syscall.ECONNREFUSED)
	timedOut := dial("tcp6", "::1", "connect", context.DeadlineExceeded)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"IPv4 out of fds, IPv6 refused", &LoopbackError{Port: 8080, IPv4: dial("tcp4", "127.0.0.1", "socket", syscall.EMFILE), IPv6: refused}, "other"},
		{"IPv4 out of system fds, IPv6 refused", &LoopbackError{Port: 8080, IPv4: dial("tcp4", "127.0.0.1", "socket", syscall.ENFILE), IPv6: refused}, "other"},
		{"IPv4 out of memory, IPv6 timed out", &LoopbackError{Port: 8080, IPv4: dial("tcp4", "127.0.0.1", "socket", syscall.ENOBUFS), IPv6: timedOut}, "other"},
		{"IPv4 refused, IPv6 out of fds", &LoopbackError{Port: 8080, IPv4: dial("tcp4", "127.0.0.1", "connect", syscall.ECONNREFUSED), IPv6: dial("tcp6", "::1", "socket", syscall.EMFILE)}, "other"},
		{"IPv4 timed out, IPv6 refused", &LoopbackError{Port: 8080, IPv4: dial("tcp4", "127.0.0.1", "connect", context.DeadlineExceeded), IPv6: refused}, "timeout"},
		{"IPv4 refused, IPv6 timed out", &LoopbackError{Port: 8080, IPv4: dial("tcp4", "127.0.0.1", "connect", syscall.ECONNREFUSED), IPv6: timedOut}, "timeout"},
		{"IPv4 refused, IPv6 unreachable", &LoopbackError{Port: 8080, IPv4: dial("tcp4", "127.0.0.1", "connect", syscall.ECONNREFUSED), IPv6: dial("tcp6", "::1", "connect", syscall.EADDRNOTAVAIL)}, "refused"},
		{"IPv4 forbidden by a firewall, no IPv6", &LoopbackError{Port: 8080, IPv4: dial("tcp4", "127.0.0.1", "connect", syscall.EPERM), IPv6: dial("tcp6", "::1", "connect", syscall.EADDRNOTAVAIL)}, "unreachable"},
		{"IPv4 out of ephemeral ports, IPv6 refused", &LoopbackError{Port: 8080, IPv4: dial("tcp4", "127.0.0.1", "connect", syscall.EADDRNOTAVAIL), IPv6: refused}, "other"},
		{"both refused", &LoopbackError{Port: 8080, IPv4: dial("tcp4", "127.0.0.1", "connect", syscall.ECONNREFUSED), IPv6: refused}, "refused"},
		{"netns open out of fds", fmt.Errorf("open netns /run/netns/a_b: %w", syscall.EMFILE), "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Reason(tt.err); got != tt.want {
				t.Errorf("Reason(%v): got %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}
