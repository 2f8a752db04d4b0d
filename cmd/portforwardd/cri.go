package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/portforwardd/portforwardd/cri"
	"github.com/portforwardd/portforwardd/server"
)

// criTokens adapts cri.Tokens to server.Tokens.
type criTokens struct{ t *cri.Tokens }

func (c criTokens) Redeem(token string) (server.TokenGrant, bool) {
	g, ok := c.t.Redeem(token)
	return server.TokenGrant{SandboxID: g.SandboxID, Target: g.Target, Ports: g.Ports}, ok
}

// streamBaseURL is the base of the URLs PortForward answers: --stream-url,
// or http:// and the forwarding listener's address, with a wildcard host
// replaced by 127.0.0.1 (the kubelet dials it from the host).
func streamBaseURL(flagValue string, ln net.Addr, tls bool) string {
	if flagValue != "" {
		return flagValue
	}
	scheme := "http://"
	if tls {
		scheme = "https://"
	}
	host, port, err := net.SplitHostPort(ln.String())
	if err != nil {
		return scheme + ln.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return scheme + net.JoinHostPort(host, port)
}

// checkStreamURL refuses a --stream-url the kubelet could not dial: it
// must be an absolute http:// or https:// URL with a host, and nothing
// after its path (the proxy appends /portforward/<token>).
func checkStreamURL(v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	switch {
	case err != nil:
		return fmt.Errorf("--stream-url: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("--stream-url %q: want an http:// or https:// URL", v)
	case u.Host == "":
		return fmt.Errorf("--stream-url %q: no host", v)
	case u.User != nil, u.RawQuery != "", u.ForceQuery, u.Fragment != "":
		return fmt.Errorf("--stream-url %q: want scheme, host, port and path only", v)
	}
	return nil
}

// listenUnix listens on a unix:// endpoint: the directory is created, a
// stale socket from an earlier run is removed (one that takes connections
// is another process's, and anything else at the path is an error), and
// the socket is readable and writable by root and its group only (0660;
// 0600 until the chmod, see bindUnixPrivate).
func listenUnix(endpoint string) (net.Listener, error) {
	path, err := cri.SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		// A socket someone serves (another daemon, the runtime) is not
		// stale: removing it would take the kubelet's connections from
		// a process that still runs.
		// Only a refused connection says nobody listens: one whose
		// backlog is full (EAGAIN) or that does not answer is alive.
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another process", path)
		}
		switch {
		case errors.Is(err, syscall.ENOENT):
			// Removed meanwhile (the process that had it stopped).
		case !errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("%s: cannot tell whether another process serves it: %w", path, err)
		default:
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
		}
	}
	ln, err := bindUnixPrivate(path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// bindUnixPrivate listens on a unix socket whose file is created with mode
// 0600 at most, whatever the umask: the socket's own mode, which bind(2)
// gives the file (less the umask), is set before the bind. With the
// file created by the umask alone and chmod-ed after, a umask of 0 left
// it open to every local user (connect(2) needs write permission only)
// until the chmod, and a connection made then kept the runtime's API.
func bindUnixPrivate(path string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var cerr error
		if err := rc.Control(func(fd uintptr) { cerr = unix.Fchmod(int(fd), 0o600) }); err != nil {
			return err
		}
		if cerr != nil {
			return fmt.Errorf("set the socket's mode before bind: %w", cerr)
		}
		return nil
	}}
	return lc.Listen(context.Background(), "unix", path)
}

// criProxy is the running CRI proxy.
type criProxy struct {
	srv      *grpc.Server
	upstream *grpc.ClientConn
	errc     chan error
}

func startCRIProxy(o options, act *activation, tokens *cri.Tokens, srv *server.Server, base string, metrics *server.Metrics, log *slog.Logger) (*criProxy, error) {
	upstream, err := cri.Dial(o.criUpstream)
	if err != nil {
		return nil, fmt.Errorf("--cri-upstream: %w", err)
	}
	var ln net.Listener
	if _, ok := activatedName(o.criListen); ok {
		// The service manager owns the socket file: its mode is the
		// socket unit's SocketMode=, and it is not removed at exit.
		ln, err = act.listener("--cri-listen", o.criListen, "unix")
	} else {
		ln, err = listenUnix(o.criListen)
	}
	if err != nil {
		upstream.Close()
		return nil, fmt.Errorf("--cri-listen: %w", err)
	}
	p := cri.NewProxy(cri.ProxyConfig{
		Upstream:  upstream,
		Tokens:    tokens,
		StreamURL: func() (string, bool) { return base, srv.Ready() },
		Metrics:   cri.NewMetrics(metrics.Registerer()),
		Log:       log.With("component", "cri-proxy"),
	})
	cp := &criProxy{srv: p.NewServer(), upstream: upstream, errc: make(chan error, 1)}
	go func() {
		// gRPC retries a failed accept silently: the kubelet's calls
		// would wait with nothing in the log.
		if err := cp.srv.Serve(server.WarnAcceptShortage(ln, log, "--cri-listen")); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			cp.errc <- fmt.Errorf("serve --cri-listen: %w", err)
		}
	}()
	log.Info("serving CRI proxy", "listen", o.criListen, "upstream", o.criUpstream, "stream_url", base)
	return cp, nil
}

// criStopGrace is how long the CRI proxy's calls in flight get to finish
// once the forwarding server has drained; the rest are cut.
const criStopGrace = 2 * time.Second

// stop lets calls in flight finish until ctx ends, then cuts the rest
// (long-lived streaming calls such as GetContainerEvents never finish on
// their own).
func (cp *criProxy) stop(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		cp.srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		cp.srv.Stop()
		<-done
	}
	cp.upstream.Close()
}
