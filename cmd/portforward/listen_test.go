package main

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/portforward"
	"k8s.io/streaming/pkg/httpstream"
)

// idleConn is a connection that never carries a stream: enough for
// client-go's PortForwarder to listen.
type idleConn struct{}

func (idleConn) CreateStream(http.Header) (httpstream.Stream, error) {
	return nil, errors.New("no streams")
}
func (idleConn) Close() error                       { return nil }
func (idleConn) CloseChan() <-chan bool             { return nil }
func (idleConn) SetIdleTimeout(time.Duration)       {}
func (idleConn) RemoveStreams(...httpstream.Stream) {}

type idleDialer struct{}

func (idleDialer) Dial(...string) (httpstream.Connection, string, error) {
	return idleConn{}, portforward.PortForwardProtocolV1Name, nil
}

// kubectlListen runs client-go's PortForwarder (what kubectl, and this
// CLI's spdy and websocket transports, run) with the --address list and
// the ports, and returns its stdout and stderr once it forwards or fails,
// and its error ("" if it forwards).
func kubectlListen(t *testing.T, addresses string, ports []string) (stdout, stderr, errText string) {
	t.Helper()
	stop, ready := make(chan struct{}), make(chan struct{})
	out, errOut := newOutBuf(), newOutBuf()
	pf, err := portforward.NewOnAddressesForStreaming(idleDialer{}, strings.Split(addresses, ","), ports, stop, ready, out, errOut)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- pf.ForwardPorts() }()
	select {
	case <-ready:
		close(stop)
		if err := <-done; err != nil {
			t.Fatalf("client-go after its stop: %v", err)
		}
	case err := <-done:
		errText = err.Error()
	case <-time.After(failAfter):
		t.Fatalf("client-go neither forwards nor fails within %v", failAfter)
	}
	return out.String(), errOut.String(), errText
}

// TestListenLikeKubectl: with the raw and h2 transports (auto's choice
// against portforwardd) the CLI listens where kubectl does, prints what
// it prints, and forwards or fails as it does.
func TestListenLikeKubectl(t *testing.T) {
	busy4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy4.Close()
	busy := strings.TrimPrefix(busy4.Addr().String(), "127.0.0.1:")
	busy6, err := net.Listen("tcp6", "[::1]:"+busy)
	if err != nil {
		t.Fatal(err)
	}
	defer busy6.Close()
	d := startFakeDaemon(t, "")
	ports := freePorts(t, 2)
	free, free2 := ports[0], ports[1]
	for _, tc := range []struct {
		name, addresses string
		ports           []string
		refused         string // an address that must not accept while forwarding
	}{
		// tcp4 and tcp6 (IPv6 only) wildcards do not collide.
		{"both wildcards", "0.0.0.0,::", []string{free + ":80"}, ""},
		// IPv6 only, as kubectl.
		{"IPv6 wildcard", "::", []string{free + ":80"}, "127.0.0.1:" + free},
		// 0.0.0.0 sorts first, then localhost's 127.0.0.1 may fail.
		{"wildcard and localhost", "0.0.0.0,localhost", []string{free + ":80"}, ""},
		{"one port busy", "localhost", []string{free + ":80", busy + ":81"}, ""},
		{"one port twice", "localhost", []string{free + ":80", free + ":81", free2 + ":82"}, ""},
		{"every port busy", "127.0.0.1", []string{busy + ":80"}, ""},
		// Two "Unable to listen" lines; the error is still one line.
		{"every port busy, two ports", "127.0.0.1", []string{busy + ":80", busy + ":81"}, ""},
		{"explicit address busy", "127.0.0.1,::1", []string{busy + ":80", free + ":81"}, ""},
	} {
		for _, transport := range []string{"raw", "h2"} {
			t.Run(tc.name+"/"+transport, func(t *testing.T) {
				kout, kerr, kfail := kubectlListen(t, tc.addresses, tc.ports)
				c := startCLI(t, append([]string{"--server", d.URL, "--transport", transport, "--address", tc.addresses, "pod"}, tc.ports...)...)
				out, _ := c.stdout.waitFor(t, "kubectl's stdout "+kout, c.exited, func(s string) bool { return s == kout })
				if kfail != "" {
					code := c.exitCode(t, "kubectl failed")
					want := "error: " + kfail + " (" + firstLine(kerr) + ")\n" // one line, as for client-go's transports
					if out, errOut := c.stdout.String(), c.stderr.String(); code != 1 || out != kout || errOut != want {
						t.Fatalf("exit %d, stdout %q, stderr %q; want as kubectl: exit 1, stdout %q, stderr %q", code, out, errOut, kout, want)
					}
					return
				}
				errOut, _ := c.stderr.waitFor(t, "kubectl's stderr "+kerr, c.exited, func(s string) bool { return s == kerr })
				if out != kout || errOut != kerr {
					t.Fatalf("exit %s, stdout %q, stderr %q; want as kubectl: forwarding, stdout %q, stderr %q", exitState(c), out, errOut, kout, kerr)
				}
				if tc.refused != "" {
					if conn, err := net.Dial("tcp", tc.refused); err == nil {
						conn.Close()
						t.Errorf("%s accepts a connection, as kubectl would not", tc.refused)
					}
				}
				c.stop()
				if code := c.exitCode(t, "SIGINT"); code != 0 {
					t.Errorf("exit %d after SIGINT, want 0; stderr %q", code, c.stderr)
				}
			})
		}
	}
}

// exitState says whether c has exited, and how.
func exitState(c *cliRun) string {
	select {
	case <-c.exited:
		return "code " + strconv.Itoa(c.code)
	default:
		return "not yet"
	}
}

// TestListenFailedPortClosed: when one address of a port fails, the
// port's listeners that did open are closed (client-go leaves them
// accepting), and the other ports are forwarded.
//
// The busy port comes from freePorts, below the ephemeral range: one from
// [::1]:0 is in it, where another process's listener on 127.0.0.1:0 could
// take its IPv4 side, which then still accepted after the CLI gave it up.
func TestListenFailedPortClosed(t *testing.T) {
	d := startFakeDaemon(t, "hi")
	ports := freePorts(t, 2)
	busy, free := ports[0], ports[1]
	busy6, err := net.Listen("tcp6", "[::1]:"+busy)
	if err != nil {
		t.Fatal(err)
	}
	defer busy6.Close()
	c := startCLI(t, "--server", d.URL, "--transport", "raw", "--address", "127.0.0.1,::1", "pod", busy+":80", free+":81")
	wantErr := "Unable to listen on port " + busy + ": "
	if s, ok := c.stderr.waitFor(t, wantErr, c.exited, func(s string) bool { return strings.HasPrefix(s, wantErr) }); !ok {
		t.Fatalf("exit %d with stderr %q, want %q…", c.code, s, wantErr)
	}
	if conn, err := net.Dial("tcp4", "127.0.0.1:"+busy); err == nil {
		conn.Close()
		t.Errorf("127.0.0.1:%s still accepts after its port failed", busy)
	}
	c.stdout.waitFor(t, "forwarding of port "+free, c.exited, func(s string) bool {
		return strings.Contains(s, "Forwarding from [::1]:"+free+" -> 81\n")
	})
	echoOnce(t, free, "hi", "ping")
}
