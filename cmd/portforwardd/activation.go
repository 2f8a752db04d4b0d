package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// activatedScheme marks a listener flag's value that names a socket the
// service manager passed (systemd socket activation): fd://NAME, NAME
// being the socket unit's FileDescriptorName=.
const activatedScheme = "fd://"

// activatedName returns NAME of an fd://NAME flag value.
func activatedName(v string) (string, bool) {
	return strings.CutPrefix(v, activatedScheme)
}

// listenFDsStart is the first file descriptor systemd passes
// (SD_LISTEN_FDS_START in sd_listen_fds(3)).
const listenFDsStart = 3

// activation is the sockets the service manager passed, by name, as
// sd_listen_fds(3) reads them: LISTEN_FDS descriptors from 3 on, for this
// process only if LISTEN_PID is its PID, named by LISTEN_FDNAMES. A socket
// it holds outlives the daemon: connections that come while the daemon
// restarts wait in its backlog for the next one, where without it they
// are refused.
type activation struct {
	files map[string]*os.File
	names []string // in the order passed, for errors
	// why says why no socket was taken, when none was.
	why string
}

// takeActivation takes the sockets passed to this process and clears the
// variables that pass them, as sd_listen_fds(1) does.
func takeActivation() *activation {
	a := takeActivationFrom(os.Getenv, os.Getpid(), listenFDsStart)
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	return a
}

// takeActivationFrom reads the variables through getenv for process pid,
// with the first descriptor at start.
func takeActivationFrom(getenv func(string) string, pid, start int) *activation {
	a := &activation{files: map[string]*os.File{}}
	p, n := getenv("LISTEN_PID"), getenv("LISTEN_FDS")
	if p == "" || n == "" {
		a.why = "no sockets were passed (LISTEN_PID and LISTEN_FDS are not set)"
		return a
	}
	if p != strconv.Itoa(pid) {
		a.why = fmt.Sprintf("the sockets passed are for process %s, not this one (%d)", p, pid)
		return a
	}
	count, err := strconv.Atoi(n)
	if err != nil || count <= 0 || count > 1024 {
		a.why = fmt.Sprintf("LISTEN_FDS=%q is not a count of sockets", n)
		return a
	}
	names := strings.Split(getenv("LISTEN_FDNAMES"), ":")
	for i := range count {
		fd := start + i
		// Taken or not, none of them may leak into a child.
		syscall.CloseOnExec(fd)
		name := "unknown" // systemd's name for an unnamed one
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		if prev, dup := a.files[name]; dup {
			// Two sockets of one name: neither is the one meant.
			if prev != nil {
				prev.Close()
			}
			a.files[name] = nil
			os.NewFile(uintptr(fd), "").Close()
			continue
		}
		a.files[name] = os.NewFile(uintptr(fd), activatedScheme+name)
		a.names = append(a.names, name)
	}
	if len(a.names) == 0 {
		a.why = "no usable socket was passed"
	}
	return a
}

// listener returns the socket named NAME by a flag's fd://NAME value, as
// a listener of the network (tcp or unix) the flag needs. Each socket is
// taken once.
func (a *activation) listener(flag, value, network string) (net.Listener, error) {
	name, _ := activatedName(value)
	f, ok := a.files[name]
	switch {
	case ok && f == nil:
		return nil, fmt.Errorf("%s %s: more than one socket is named %q (FileDescriptorName=)", flag, value, name)
	case !ok && a.why != "":
		return nil, fmt.Errorf("%s %s: %s", flag, value, a.why)
	case !ok:
		return nil, fmt.Errorf("%s %s: no socket of that name was passed (passed: %s)", flag, value, strings.Join(a.names, ", "))
	}
	delete(a.files, name)
	a.names = slices.DeleteFunc(a.names, func(n string) bool { return n == name })
	defer f.Close() // the listener holds a duplicate
	// A socket unit with Accept=yes passes one accepted connection, not
	// the listening socket.
	if v, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v == 0 {
		return nil, fmt.Errorf("%s %s: the socket passed is not a listening socket (a socket unit with Accept=no, ListenStream=, is needed)", flag, value)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, value, err)
	}
	if got := ln.Addr().Network(); got != network {
		ln.Close()
		return nil, fmt.Errorf("%s %s: the socket passed is a %s socket (%s); want %s", flag, value, got, ln.Addr(), network)
	}
	return ln, nil
}

// closeUnclaimed closes the sockets passed that no flag named, saying so.
func (a *activation) closeUnclaimed(log *slog.Logger) {
	for _, name := range a.names {
		if f := a.files[name]; f != nil {
			log.Warn("a socket passed by the service manager is not named by any listener flag; closed", "name", name)
			f.Close()
		}
		delete(a.files, name)
	}
	a.names = nil
}
