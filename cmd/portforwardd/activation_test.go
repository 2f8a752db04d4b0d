package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// passAt puts duplicates of the sockets' descriptors at start, start+1,
// ..., where a service manager puts them (from 3; the tests use higher
// numbers, free in a test process), and returns the environment that
// passes them, for this process, under names.
func passAt(t *testing.T, start int, names []string, socks ...interface{ File() (*os.File, error) }) func(string) string {
	t.Helper()
	for i, s := range socks {
		f, err := s.File()
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Dup3(int(f.Fd()), start+i, 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
		fd := start + i
		t.Cleanup(func() { unix.Close(fd) })
	}
	env := map[string]string{
		"LISTEN_PID":     strconv.Itoa(os.Getpid()),
		"LISTEN_FDS":     strconv.Itoa(len(socks)),
		"LISTEN_FDNAMES": strings.Join(names, ":"),
	}
	return func(k string) string { return env[k] }
}

func tcpListener(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

func unixListener(t *testing.T) *net.UnixListener {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "cri.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.UnixListener)
}

func TestActivationTakesSocketsByName(t *testing.T) {
	tcp, uds := tcpListener(t), unixListener(t)
	a := takeActivationFrom(passAt(t, 900, []string{"listen", "cri"}, tcp, uds), os.Getpid(), 900)

	ln, err := a.listener("--listen", "fd://listen", "tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr().String() != tcp.Addr().String() {
		t.Fatalf("fd://listen is %s, want the socket passed, %s", ln.Addr(), tcp.Addr())
	}
	// The listener is the passed socket: a connection to it is accepted
	// from it.
	c, err := net.Dial("tcp", tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	cln, err := a.listener("--cri-listen", "fd://cri", "unix")
	if err != nil {
		t.Fatal(err)
	}
	if cln.Addr().String() != uds.Addr().String() {
		t.Fatalf("fd://cri is %s, want %s", cln.Addr(), uds.Addr())
	}
	path := uds.Addr().String()
	cln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("closing the passed unix socket removed its file, which the service manager owns: %v", err)
	}

	if _, err := a.listener("--listen", "fd://listen", "tcp"); err == nil || !strings.Contains(err.Error(), "no socket of that name") {
		t.Fatalf("a socket taken twice: %v; want it refused", err)
	}
}

func TestActivationErrors(t *testing.T) {
	tcp, uds := tcpListener(t), unixListener(t)
	for _, tc := range []struct {
		name    string
		act     func(t *testing.T) *activation
		flag    string
		network string
		want    string
	}{
		{"nothing passed", func(t *testing.T) *activation {
			return takeActivationFrom(func(string) string { return "" }, os.Getpid(), 900)
		}, "fd://listen", "tcp", "no sockets were passed"},
		{"another process's", func(t *testing.T) *activation {
			env := passAt(t, 900, []string{"listen"}, tcp)
			return takeActivationFrom(env, os.Getpid()+1, 900)
		}, "fd://listen", "tcp", "not this one"},
		{"unknown name", func(t *testing.T) *activation {
			return takeActivationFrom(passAt(t, 900, []string{"listen", "cri"}, tcp, uds), os.Getpid(), 900)
		}, "fd://metrics", "tcp", "no socket of that name was passed (passed: listen, cri)"},
		{"unnamed", func(t *testing.T) *activation {
			return takeActivationFrom(passAt(t, 900, nil, tcp), os.Getpid(), 900)
		}, "fd://listen", "tcp", "passed: unknown"},
		{"two of one name", func(t *testing.T) *activation {
			return takeActivationFrom(passAt(t, 900, []string{"listen", "listen"}, tcp, uds), os.Getpid(), 900)
		}, "fd://listen", "tcp", "more than one socket"},
		{"wrong network", func(t *testing.T) *activation {
			return takeActivationFrom(passAt(t, 900, []string{"listen"}, uds), os.Getpid(), 900)
		}, "fd://listen", "tcp", "a unix socket"},
		{"a connection, not a listener (Accept=yes)", func(t *testing.T) *activation {
			c, err := net.Dial("tcp", tcp.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return takeActivationFrom(passAt(t, 900, []string{"listen"}, c.(*net.TCPConn)), os.Getpid(), 900)
		}, "fd://listen", "tcp", "not a listening socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.act(t)
			ln, err := a.listener("--listen", tc.flag, tc.network)
			if err == nil {
				ln.Close()
				t.Fatalf("took %s", ln.Addr())
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "--listen "+tc.flag+": ") {
				t.Fatalf("error %q; want it to start with the flag and say %q", err, tc.want)
			}
		})
	}
}

func TestActivationClosesUnclaimedSockets(t *testing.T) {
	tcp := tcpListener(t)
	a := takeActivationFrom(passAt(t, 900, []string{"spare"}, tcp), os.Getpid(), 900)
	var log strings.Builder
	a.closeUnclaimed(slog.New(slog.NewTextHandler(&log, nil)))
	if !strings.Contains(log.String(), "name=spare") {
		t.Fatalf("closing an unclaimed socket logged %q; want its name", log.String())
	}
	if _, err := unix.FcntlInt(900, unix.F_GETFD, 0); err != unix.EBADF {
		t.Fatalf("the unclaimed socket's descriptor is still open (%v)", err)
	}
}

func TestActivatedFlagValues(t *testing.T) {
	for _, args := range [][]string{
		{"--listen=fd://listen", "--metrics-listen=fd://metrics", "--cri-listen=fd://cri"},
		// A passed socket's exposure is checked when it is taken: at
		// parse time, fd:// is not an address off loopback.
		{"--listen=fd://listen", "--metrics-listen=fd://metrics", "--pprof"},
	} {
		if _, err := parseFlags(args, io.Discard); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
	for _, args := range [][]string{{"--listen=fd://"}, {"--metrics-listen=fd://"}, {"--cri-listen=fd://"}} {
		if _, err := parseFlags(args, io.Discard); err == nil || !strings.Contains(err.Error(), "want fd://NAME") {
			t.Errorf("%v: %v; want it refused for its missing name", args, err)
		}
	}
}

// passed is the activation a service manager makes of socks, by name:
// each a duplicate, as after a fork.
func passed(t *testing.T, socks map[string]interface{ File() (*os.File, error) }) *activation {
	t.Helper()
	a := &activation{files: map[string]*os.File{}}
	for name, s := range socks {
		f, err := s.File()
		if err != nil {
			t.Fatal(err)
		}
		a.files[name] = f
		a.names = append(a.names, name)
	}
	return a
}

// TestActivatedSocketsCarryConnectionsAcrossARestart: with the sockets
// held by the service manager, a client that comes while the daemon
// drains and restarts waits in the socket's backlog and is served by the
// next daemon, on the forwarding socket and on the CRI socket; without
// them, it was refused from the drain's start until the next daemon
// listened, and the kubelet saw its runtime down.
func TestActivatedSocketsCarryConnectionsAcrossARestart(t *testing.T) {
	ns, podPort := startEchoPod(t)
	tcp, uds := tcpListener(t), unixListener(t)
	uds.SetUnlinkOnClose(false)
	criSock := uds.Addr().String()
	socks := map[string]interface{ File() (*os.File, error) }{"listen": tcp, "cri": uds}
	flags := []string{"--listen=fd://listen", "--cri-listen=fd://cri"}

	first := startCRIDaemonWith(t, "/run/netns", passed(t, socks), flags...)
	if got := first.sink.listenAddr(); got != tcp.Addr().String() {
		t.Fatalf("the daemon serves on %s, want the socket passed, %s", got, tcp.Addr())
	}
	fc := openRawForward(t, tcp.Addr().String(), ns, podPort) // keeps the drain going
	first.sigc <- syscall.SIGTERM
	waitStatus(t, first.metricsAddr, "/readyz", "503 Service Unavailable")

	// Draining: the daemon no longer takes connections, and a client
	// comes.
	late, err := net.Dial("tcp4", tcp.Addr().String())
	if err != nil {
		t.Fatalf("a client during the drain: %v", err)
	}
	defer late.Close()
	late.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(late, "GET /portForward/%s/pod?port=%d HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n", ns, podPort)

	fc.Close()
	waitServed(t, first.served, "the first daemon did not stop")
	if _, err := os.Stat(criSock); err != nil {
		t.Fatalf("the CRI socket's file is gone after the daemon stopped (the service manager owns it): %v", err)
	}

	// No daemon runs: the kubelet calls its runtime.
	conn, err := grpc.NewClient("unix://"+criSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type answer struct {
		v   *runtimeapi.VersionResponse
		err error
	}
	version := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		v, err := runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(false))
		version <- answer{v, err}
	}()

	startCRIDaemonWith(t, "/run/netns", passed(t, socks), flags...)
	resp, err := http.ReadResponse(bufio.NewReader(late), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("the client that came during the restart: %v, %v; want 101 from the next daemon", resp, err)
	}
	if _, err := io.WriteString(late, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(late, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the next daemon: %q, %v", buf, err)
	}
	if a := <-version; a.err != nil || a.v.RuntimeName != "events-runtime" {
		t.Fatalf("a CRI call made while no daemon ran: %v, %v; want the runtime's answer once the next one runs", a.v, a.err)
	}
}
