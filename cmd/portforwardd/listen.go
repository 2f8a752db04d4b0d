package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// openListener opens a listener flag's listener: the socket the service
// manager passed for fd://NAME, or one listening on host:port, with
// SO_REUSEPORT when reusePort is set.
func openListener(act *activation, flag, value string, reusePort bool) (net.Listener, error) {
	if _, ok := activatedName(value); ok {
		return act.listener(flag, value, "tcp")
	}
	return listen(flag, value, reusePort)
}

// listen listens on a listener flag's address. An address the flags took
// for loopback must be bound to loopback: "localhost" is looked up like
// any name (/etc/hosts, then DNS), and bound elsewhere it would serve the
// network what the flag checks let through for loopback only.
func listen(flag, addr string, reusePort bool) (net.Listener, error) {
	var lc net.ListenConfig
	if reusePort {
		lc.Control = setReusePort
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		if reusePort && errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen on %s %s: %w (with --reuse-port, the process already listening there must have set SO_REUSEPORT too, and run as the same user)", flag, addr, err)
		}
		return nil, fmt.Errorf("listen on %s %s: %w", flag, addr, err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && loopbackAddress(addr) && !tcp.IP.IsLoopback() {
		ln.Close()
		return nil, fmt.Errorf("%s %s is bound to %s, not a loopback address: check how the host's resolver (/etc/hosts) maps it, or give an IP address", flag, addr, tcp)
	}
	return ln, nil
}

// setReusePort is a ListenConfig.Control that sets SO_REUSEPORT, so that
// the next daemon (a DaemonSet's surge pod) can listen on the same port
// while this one drains: the kernel spreads new connections over every
// listener of the port, and a closed listener's share goes to the others.
func setReusePort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set SO_REUSEPORT: %w", serr)
	}
	return nil
}

// migrateReqFile is the sysctl that moves the connections a closed
// SO_REUSEPORT listener had queued, not yet accepted, to another listener
// of its port (Linux 5.14); without it they are reset.
const migrateReqFile = "/proc/sys/net/ipv4/tcp_migrate_req"

// migrateReq reports whether the daemon's network namespace hands a
// closed listener's queued connections to the others, and if not, why.
func migrateReq(file string) (bool, string) {
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, "the kernel has no net.ipv4.tcp_migrate_req (before Linux 5.14)"
	case err != nil:
		return false, err.Error()
	case strings.TrimSpace(string(b)) != "1":
		return false, "net.ipv4.tcp_migrate_req is " + strings.TrimSpace(string(b))
	}
	return true, ""
}
