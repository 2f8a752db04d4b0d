package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"

	"github.com/portforwardd/portforwardd/streams"
)

// rawForwarder forwards each local connection over its own connect-tcp
// upgrade, spliced in the kernel on both hops, or (with h2 set) over its
// own stream of one shared HTTP/2 connection.
type rawForwarder struct {
	h2        *http.Client
	base      *url.URL
	tlsConfig *tls.Config
	bearer    func() (string, error) // the token for each connection; nil for none
	namespace string
	pod       string
	stderr    io.Writer

	lost     chan struct{} // closed by lose
	lostOnce sync.Once

	accepting sync.WaitGroup // the accept loops
	active    sync.WaitGroup // the forwards under way, added to by the accept loops

	mu    sync.Mutex
	ended bool // guarded by mu: the forward has returned, stderr is the caller's
}

// lostError is the failure of one connection that also ends the forward:
// the server cannot be reached (its dial failed), or the pod does not
// exist. The raw transport keeps no connection to the server between
// local connections, and h2 does not watch its own, so this is how they
// notice what client-go notices when its one connection closes.
type lostError struct{ err error }

func (e *lostError) Error() string { return e.err.Error() }
func (e *lostError) Unwrap() error { return e.err }

// lose ends the forward with "lost connection to pod", once the forwards
// under way are done.
func (f *rawForwarder) lose() { f.lostOnce.Do(func() { close(f.lost) }) }

func rawForward(o options, base *url.URL, cfg *rest.Config, bearer func() (string, error), stdout, stderr io.Writer, stop <-chan struct{}, h2 bool) error {
	addrs, err := parseAddresses(o.addresses)
	if err != nil {
		return err
	}
	pairs, err := parsePortSpecs(o.ports)
	if err != nil {
		return err
	}
	var tlsConfig *tls.Config
	if base.Scheme == "https" {
		if tlsConfig, err = rest.TLSConfigFor(cfg); err != nil {
			return err
		}
		if tlsConfig == nil {
			// No TLS flag: client-go then verifies with the system's
			// roots, and so does an empty config. nil would mean no TLS.
			tlsConfig = &tls.Config{}
		}
	}
	f := &rawForwarder{base: base, tlsConfig: tlsConfig, bearer: bearer, namespace: o.namespace, pod: o.pod, stderr: stderr, lost: make(chan struct{})}
	if h2 {
		var protocols http.Protocols
		protocols.SetHTTP2(true)            // over TLS
		protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
		f.h2 = &http.Client{Transport: &http.Transport{Protocols: &protocols, TLSClientConfig: tlsConfig, HTTP2: h2Config,
			DialContext: serverDialer.DialContext, TLSHandshakeTimeout: tlsHandshakeTimeout, IdleConnTimeout: h2IdleTimeout},
			// portforwardd redirects nothing; a redirect's answer fails the
			// connection with its status, as any status but 200 does.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	// As for client-go's transports, a failure is one line.
	early := &bytes.Buffer{}
	listeners, err := listenPorts(addrs, pairs, stdout, early)
	if err != nil {
		return withEarly(err, early)
	}
	io.Copy(stderr, early)
	defer func() {
		for _, ln := range listeners {
			ln.Close()
		}
		f.end()
	}()
	for _, ln := range listeners {
		f.accepting.Add(1)
		go func() {
			defer f.accepting.Done()
			f.accept(ln, ln.port.local, ln.port.remote, stdout)
		}()
	}
	select {
	case <-stop:
		return nil
	case <-f.lost:
	}
	// Each forward has a connection (h2: a stream) of its own, which a
	// server that is draining still serves, though it takes no new one:
	// the CLI takes no new connection either, and lets those under way
	// finish (the server's drain bounds them), as kubectl's session ends
	// when the drain has let its connections finish. Exiting here cut them.
	for _, ln := range listeners {
		ln.Close()
	}
	done := make(chan struct{})
	go func() {
		f.accepting.Wait() // no accept loop adds to active after this
		f.active.Wait()
		close(done)
	}()
	select {
	case <-stop: // the connection was lost all the same
	case <-done:
	}
	return portforward.ErrLostConnectionToPod
}

// accept serves ln until it is closed. When an accept fails otherwise
// (the process is out of file descriptors or memory, or a connection
// failed before it was accepted), it says so once on stderr and tries
// again, from 5 ms up to 1 s apart, as net/http's server does for the
// errors it knows: kubectl's listener stops accepting for good, leaving
// the port dead (and its connections queued unanswered) while the CLI
// runs. Go retries an accept only after EINTR, EAGAIN and ECONNABORTED
// (internal/poll/fd_unix.go's Accept), and on Windows after
// ERROR_NETNAME_DELETED and WSAECONNRESET (internal/poll/fd_windows.go's
// Accept); accept(2) on Linux also reports a pending network error of the
// new connection, or a firewall's EPERM, which its manual says to retry.
func (f *rawForwarder) accept(ln net.Listener, local, remote uint16, stdout io.Writer) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if delay == 0 {
				f.mu.Lock()
				if !f.ended {
					fmt.Fprintf(f.stderr, "error accepting connection on port %d: %v; trying again\n", local, err)
				}
				f.mu.Unlock()
				delay = 5 * time.Millisecond
			} else {
				delay = min(2*delay, time.Second)
			}
			time.Sleep(delay) // a back-off: nothing else frees descriptors sooner
			continue
		}
		delay = 0
		fmt.Fprintf(stdout, "Handling connection for %d\n", local)
		f.active.Add(1)
		go func() {
			defer f.active.Done()
			f.handle(c.(*net.TCPConn), local, remote)
		}()
	}
}

// handle forwards c, and reports its failure as client-go does: "an
// error occurred forwarding L -> R: ..." on stderr (unless the forward
// has ended). A lostError then ends the forward.
func (f *rawForwarder) handle(c *net.TCPConn, local, remote uint16) {
	defer c.Close()
	var err error
	if f.h2 != nil {
		err = f.forwardH2(c, remote)
	} else {
		err = f.forwardRaw(c, remote)
	}
	if err == nil {
		return
	}
	f.mu.Lock()
	if !f.ended {
		fmt.Fprintf(f.stderr, "an error occurred forwarding %d -> %d: %v\n", local, remote, err)
	}
	f.mu.Unlock()
	if errors.As(err, new(*lostError)) {
		f.lose()
	}
}

// end silences the connections still running when the forward returns,
// so that its error is the last line on stderr.
func (f *rawForwarder) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ended = true
}

// forwardRaw upgrades one server connection and splices it to c.
func (f *rawForwarder) forwardRaw(c *net.TCPConn, remote uint16) error {
	sc, early, err := f.upgrade(remote)
	if err != nil {
		return err
	}
	defer sc.Close()
	if len(early) > 0 {
		if _, err := c.Write(early); err != nil {
			resetConn(sc)
			return nil // the local client is gone: nothing to report
		}
	}
	errc := make(chan error, 2)
	var finToServer, finToLocal atomic.Bool
	go copyHalf(errc, sc, c, &finToServer)
	go copyHalf(errc, c, sc, &finToLocal)
	// A peer that resets after its FIN, or while the other does not read,
	// is noticed by neither copy: both sockets are reset then, as on an
	// error, and the copies return.
	gone := func() {
		resetConn(sc)
		resetConn(c)
	}
	stopWatch := streams.WatchGone(
		streams.Watched{Conn: c, FinSent: &finToLocal, Gone: gone},
		streams.Watched{Conn: sc, FinSent: &finToServer, Gone: gone})
	defer stopWatch()
	for range 2 {
		if err := <-errc; err != nil {
			// A reset, or a write that failed, ends both directions at
			// once, as client-go resets its data stream: the server is
			// sent a reset, which it passes on to the pod, rather than a
			// FIN after which it would wait for a pod that may stay
			// silent. The other copy then fails and returns.
			resetConn(sc)
			c.Close()
		}
	}
	return nil
}

// copyHalf copies src to dst, then half-closes dst (finSent is set
// first), and sends on errc io.Copy's error (nil at src's EOF). Between
// two *net.TCPConn (plain TCP to the server) io.Copy splices.
func copyHalf(errc chan<- error, dst, src net.Conn, finSent *atomic.Bool) {
	_, err := io.Copy(dst, src)
	if err == nil {
		finSent.Store(true)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	errc <- err
}

// resetConn closes c's socket with a TCP reset (SO_LINGER 0); under TLS
// without a close_notify, which would say the stream ended well.
func resetConn(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// upgrade opens a connection to the server and upgrades it to connect-tcp
// to the pod's port remote. It returns the connection (a *net.TCPConn,
// or a *tls.Conn with TLS) and the pod's first bytes if they came in the
// same read as the 101 (a server that talks first, such as SSH or SMTP):
// the caller sends those to its client before anything read from the
// connection. On error the connection is closed; a failed dial (unless
// for want of a local resource), and a 404 (the pod does not exist), are
// lostErrors; a TLS handshake that fails or times out fails this
// connection only.
func (f *rawForwarder) upgrade(remote uint16) (net.Conn, []byte, error) {
	host := f.base.Host
	if f.base.Port() == "" {
		port := "80"
		if f.tlsConfig != nil {
			port = "443"
		}
		host = net.JoinHostPort(f.base.Hostname(), port)
	}
	conn, err := serverDialer.Dial("tcp", host)
	if err != nil {
		if localShortage(err) {
			return nil, nil, err
		}
		return nil, nil, &lostError{err}
	}
	if f.tlsConfig != nil {
		if conn, err = handshake(conn, f.tlsConfig, f.base.Hostname()); err != nil {
			return nil, nil, err
		}
	}
	path := f.path()
	auth := ""
	if f.bearer != nil {
		tok, err := f.bearer()
		if err != nil {
			conn.Close()
			return nil, nil, err
		}
		auth = "Authorization: Bearer " + tok + "\r\n"
	}
	if _, err := fmt.Fprintf(conn, "GET %s?port=%d HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n%s\r\n", path, remote, f.base.Host, auth); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		conn.Close()
		err := errors.New(strings.TrimSpace(string(body)))
		if resp.StatusCode == http.StatusNotFound {
			return nil, nil, &lostError{err}
		}
		return nil, nil, err
	}
	// A 101 has no body: whatever br holds beyond it is the pod's.
	early, _ := br.Peek(br.Buffered())
	return conn, early, nil
}

// serverDialer and tlsHandshakeTimeout bound the raw and h2 transports'
// connections to the server as client-go's transports (kubectl's) bound
// theirs: 30 s to connect, 10 s for the TLS handshake. Without them a
// server that accepts and never handshakes held each local connection
// for good.
var (
	serverDialer        = &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tlsHandshakeTimeout = 10 * time.Second
)

// handshake runs a TLS client handshake on conn, within
// tlsHandshakeTimeout; on error conn is closed.
func handshake(conn net.Conn, cfg *tls.Config, serverName string) (net.Conn, error) {
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = serverName
	}
	tc := tls.Client(conn, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("TLS handshake timeout after %v", tlsHandshakeTimeout)
		}
		return nil, fmt.Errorf("tls handshake with %s: %w", conn.RemoteAddr(), err)
	}
	return tc, nil
}

func (f *rawForwarder) path() string { return podURL(f.base, f.namespace, f.pod).EscapedPath() }
