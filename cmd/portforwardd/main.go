// Command portforwardd is a node-side Kubernetes port-forward server: it
// accepts the kubelet's /portForward upgrades, enters the pod's network
// namespace with setns(2), and forwards each stream to the pod's loopback.
// Run with -h for its flags.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/portforwardd/portforwardd/cri"
	"github.com/portforwardd/portforwardd/nsenter"
	"github.com/portforwardd/portforwardd/server"
	"github.com/portforwardd/portforwardd/server/auth"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	listen, metricsListen string
	netnsDir              string
	idleTimeout           time.Duration
	creationTimeout       time.Duration
	dialTimeout           time.Duration
	drainTimeout          time.Duration
	reusePort             bool
	readHeaderTimeout     time.Duration
	logLevel, logFormat   string
	showVersion           bool
	pprof                 bool
	criListen             string
	criUpstream           string
	criEndpoint           string
	streamURL             string
	criTokenTTL           time.Duration

	tlsCertFile, tlsKeyFile, clientCAFile string
	allowedNames, allowedGroups           stringList
	authKubeconfig, nodeName              string
	authCacheTTL                          time.Duration
	allowInsecureListen                   bool
	limits                                server.Limits
	// logDropped counts the log lines dropped for a reader that fell
	// behind; nil when the log is written directly.
	logDropped func() uint64
	// activation is the sockets the service manager passed, for the
	// fd://NAME listener flags; nil for none.
	activation *activation
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("portforwardd", flag.ContinueOnError)
	// The flag package prints a parse error and the whole usage before
	// returning it; run prints the error once, and the usage is for -h.
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:10350", "address of the port-forward listener (`host:port`), or fd://NAME for the socket systemd passes as NAME (socket activation)")
	fs.StringVar(&o.metricsListen, "metrics-listen", "127.0.0.1:10351", "address for /metrics, /healthz and /readyz (host:port, or fd://NAME); empty disables it")
	fs.StringVar(&o.netnsDir, "netns-dir", nsenter.DefaultNetnsDir, "directory of network namespace files; pod NS/NAME is <dir>/NS_NAME")
	fs.DurationVar(&o.idleTimeout, "stream-idle-timeout", 4*time.Hour, "close a SPDY, tunnel or v4 WebSocket connection with no traffic (pings count), and reset a raw forward or HTTP/2 stream that moved no byte, for this long; 0 disables")
	fs.DurationVar(&o.creationTimeout, "stream-creation-timeout", 30*time.Second, "how long the first stream of a pair waits for the second")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", nsenter.DefaultDialTimeout, "bound on each connect attempt inside a pod (127.0.0.1, then [::1])")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM/SIGINT, how long forwarded connections may take to finish")
	fs.BoolVar(&o.reusePort, "reuse-port", false, "listen on --listen and --metrics-listen with SO_REUSEPORT, so the next daemon can take the ports over while this one drains (a DaemonSet's surge update); on SIGTERM both close at once. Set net.ipv4.tcp_migrate_req=1 too, or connections queued on a closing listener are reset. fd:// sockets are as passed")
	fs.DurationVar(&o.readHeaderTimeout, "read-header-timeout", server.DefaultReadHeaderTimeout, "how long a client may take to finish its TLS handshake and send its request headers, on --listen and --metrics-listen (HTTP/1.1; HTTP/2 has no header timeout)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&o.pprof, "pprof", false, "serve /debug/pprof/ on the metrics listener (a non-loopback --metrics-listen needs --allow-insecure-listen)")
	fs.StringVar(&o.criListen, "cri-listen", "", "serve the CRI proxy on this `unix:///path`, or on the socket systemd passes as fd://NAME (point the kubelet's containerRuntimeEndpoint here); empty disables it")
	fs.StringVar(&o.criUpstream, "cri-upstream", "unix:///var/run/crio/crio.sock", "the runtime's CRI socket the proxy forwards to")
	fs.StringVar(&o.criEndpoint, "cri-endpoint", "", "resolve /portForward/{namespace}/{pod} through this CRI socket (`unix:///path`) instead of --netns-dir")
	fs.StringVar(&o.streamURL, "stream-url", "", "base of the URLs the CRI proxy hands out (default: http://, or https:// with --tls-cert-file, and the --listen address, 127.0.0.1 for a wildcard host); an http:// or https:// URL with a host, and a path at most")
	fs.DurationVar(&o.criTokenTTL, "cri-token-ttl", cri.TokenTTL, "how long a PortForward URL stays valid (single use either way)")
	fs.StringVar(&o.tlsCertFile, "tls-cert-file", "", "serve --listen with TLS using this PEM certificate (chain); reloaded when the file changes")
	fs.StringVar(&o.tlsKeyFile, "tls-private-key-file", "", "the PEM private key of --tls-cert-file; reloaded when the file changes")
	fs.StringVar(&o.clientCAFile, "client-ca-file", "", "authenticate client certificates signed by a CA in this PEM bundle (reloaded when it changes); required without --auth-kubeconfig, with which a bearer token does instead; needs --tls-cert-file")
	fs.Var(&o.allowedNames, "allowed-client-names", "comma-separated certificate common `names` let through (with --client-ca-file, without --auth-kubeconfig)")
	fs.Var(&o.allowedGroups, "allowed-client-groups", "comma-separated certificate organizations (`groups`) let through (with --client-ca-file, without --auth-kubeconfig)")
	fs.StringVar(&o.authKubeconfig, "auth-kubeconfig", "", "check bearer tokens with TokenReview and authorize every user with a SubjectAccessReview for create on nodes/proxy, through the API server of this kubeconfig (`path`, or in-cluster)")
	fs.StringVar(&o.nodeName, "node-name", "", "the node whose nodes/proxy permission is checked (default: the host name)")
	fs.DurationVar(&o.authCacheTTL, "auth-cache-ttl", auth.DefaultCacheTTL, "how long TokenReview and SubjectAccessReview answers are reused (denials at most 30s)")
	fs.BoolVar(&o.allowInsecureListen, "allow-insecure-listen", false, "allow --listen on a non-loopback address without TLS or without authentication (anyone who reaches it can forward), and --pprof on a non-loopback --metrics-listen")
	fs.IntVar(&o.limits.MaxSessions, "max-sessions", server.DefaultMaxSessions, "sessions served at once (upgraded connections, and each HTTP/2 stream); more are answered 503")
	fs.IntVar(&o.limits.MaxStreamsPerSession, "max-streams-per-session", server.DefaultMaxStreamsPerSession, "open SPDY streams of one connection (two per forwarded connection), and concurrent streams of one HTTP/2 connection")
	fs.IntVar(&o.limits.MaxPendingStreams, "max-pending-streams", server.DefaultMaxPendingStreams, "stream pairs of one session waiting for their second stream")
	o.limits.StreamBufferBytes, o.limits.SessionBufferBytes, o.limits.BufferBytes = server.DefaultStreamBufferBytes, server.DefaultSessionBufferBytes, server.DefaultBufferBytes
	fs.Var(byteSize{i: &o.limits.StreamBufferBytes}, "stream-buffer-bytes", "client data one stream may hold while its pod does not read, and an HTTP/2 stream's window (`bytes`; Ki, Mi, Gi suffixes; below 2Gi)")
	fs.Var(byteSize{i: &o.limits.SessionBufferBytes}, "session-buffer-bytes", "client data all streams of one connection may hold, and an HTTP/2 connection's window (`bytes`; below 2Gi)")
	fs.Var(byteSize{i64: &o.limits.BufferBytes}, "buffer-bytes", "client data all SPDY and WebSocket sessions together may hold (`bytes`); HTTP/2 connections are held to their windows instead")
	o.limits.MaxHeaderBytes = server.DefaultMaxHeaderBytes
	fs.Var(byteSize{i: &o.limits.MaxHeaderBytes}, "max-header-bytes", "largest request header block accepted, in `bytes` (431 beyond)")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "Usage of portforwardd:")
			fs.PrintDefaults()
		}
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for name, addr := range map[string]string{"--listen": o.listen, "--metrics-listen": o.metricsListen} {
		if addr == "" {
			continue // --listen's own case is below; --metrics-listen off
		}
		if sock, ok := activatedName(addr); ok {
			if sock == "" {
				return o, fmt.Errorf("%s %q: want fd://NAME, NAME being the socket's FileDescriptorName=", name, addr)
			}
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return o, fmt.Errorf("%s %q: want host:port or fd://NAME: %w", name, addr, err)
		}
	}
	switch {
	case o.idleTimeout < 0:
		return o, errors.New("--stream-idle-timeout must not be negative")
	case o.creationTimeout <= 0:
		return o, errors.New("--stream-creation-timeout must be positive")
	case o.dialTimeout <= 0:
		return o, errors.New("--dial-timeout must be positive")
	case o.readHeaderTimeout <= 0:
		return o, errors.New("--read-header-timeout must be positive")
	case o.drainTimeout < 0:
		return o, errors.New("--drain-timeout must not be negative")
	case o.listen == "":
		return o, errors.New("--listen must not be empty")
	case o.criTokenTTL <= 0:
		return o, errors.New("--cri-token-ttl must be positive")
	case o.authCacheTTL <= 0:
		return o, errors.New("--auth-cache-ttl must be positive")
	case o.limits.MaxSessions <= 0, o.limits.MaxStreamsPerSession <= 0, o.limits.MaxPendingStreams <= 0:
		return o, errors.New("--max-sessions, --max-streams-per-session and --max-pending-streams must be positive")
	case o.limits.StreamBufferBytes < 64<<10:
		return o, errors.New("--stream-buffer-bytes must be at least 64Ki")
	case o.limits.SessionBufferBytes < o.limits.StreamBufferBytes:
		return o, errors.New("--session-buffer-bytes must be at least --stream-buffer-bytes")
	case o.limits.SessionBufferBytes > math.MaxInt32:
		// They are HTTP/2 windows too, and net/http puts its 1 MiB default
		// in place of a window it cannot send.
		return o, errors.New("--stream-buffer-bytes and --session-buffer-bytes must be below 2Gi (they are HTTP/2 flow-control windows, at most 2147483647 bytes)")
	case o.limits.BufferBytes < int64(o.limits.SessionBufferBytes):
		return o, errors.New("--buffer-bytes must be at least --session-buffer-bytes")
	case o.limits.MaxHeaderBytes < 4<<10:
		return o, errors.New("--max-header-bytes must be at least 4Ki")
	}
	if err := checkStreamURL(o.streamURL); err != nil {
		return o, err
	}
	if err := checkSecurityFlags(o); err != nil {
		return o, err
	}
	for name, v := range map[string]string{"--cri-listen": o.criListen, "--cri-endpoint": o.criEndpoint} {
		if v == "" {
			continue
		}
		if sock, ok := activatedName(v); ok && name == "--cri-listen" {
			if sock == "" {
				return o, fmt.Errorf("--cri-listen %q: want fd://NAME, NAME being the socket's FileDescriptorName=", v)
			}
			continue
		}
		if _, err := cri.SocketPath(v); err != nil {
			return o, fmt.Errorf("%s: %w", name, err)
		}
	}
	if o.criListen != "" {
		if _, err := cri.SocketPath(o.criUpstream); err != nil {
			return o, fmt.Errorf("--cri-upstream: %w", err)
		}
	}
	return o, nil
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	h, err := newHandler(format, w, l)
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

func newHandler(format string, w io.Writer, level slog.Level) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}

// dropNotice formats, in the log's format and whatever --log-level says,
// the warning a logQueue writes where it dropped lines.
func dropNotice(format string) func(uint64) []byte {
	return func(n uint64) []byte {
		var b bytes.Buffer
		if h, err := newHandler(format, &b, slog.LevelWarn); err == nil {
			slog.New(h).Warn("log lines dropped: the log's reader fell behind", "lines", n)
		}
		return b.Bytes()
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "portforwardd: %v\n", err)
		return 2
	}
	if o.showVersion {
		fmt.Fprintln(stdout, "portforwardd", buildVersion())
		return 0
	}
	logq := newLogQueue(stderr, logQueueBytes, dropNotice(o.logFormat))
	defer logq.Close(logStopGrace)
	o.logDropped = logq.Dropped
	o.activation = takeActivation()
	log, err := newLogger(o.logLevel, o.logFormat, logq)
	if err != nil {
		fmt.Fprintf(stderr, "portforwardd: %v\n", err)
		return 2
	}
	// Signals are caught from here on, so one that comes while the
	// listeners open is a shutdown too, not the default exit.
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigc)
	// SIGHUP, which operators and log rotation send to reload a daemon,
	// would otherwise end the process at once (Go's default), cutting every
	// forwarded connection without a drain or a line. There is nothing to
	// reload: the TLS files are watched.
	hupc := make(chan os.Signal, 1)
	signal.Notify(hupc, syscall.SIGHUP)
	defer signal.Stop(hupc)
	stopHUP := make(chan struct{})
	defer close(stopHUP)
	go func() {
		for {
			select {
			case <-hupc:
				log.Info("SIGHUP ignored: TLS files are reloaded when they change; SIGTERM drains and stops")
			case <-stopHUP:
				return
			}
		}
	}()
	// A log line written after the log's reader went away (journald
	// restarted, the container runtime's log pipe closed) meets a broken
	// pipe, and Go's default for that on stderr is to die of SIGPIPE,
	// cutting every forwarded connection. Ignored, the write fails and
	// the line is lost, as containerd and dockerd do for the same reason.
	signal.Ignore(syscall.SIGPIPE)
	if err := serve(o, log, sigc); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

// serve runs the daemon until the first value on sigc (or a listener's
// failure), then drains; a second value ends what is left at once.
func serve(o options, log *slog.Logger, sigc <-chan os.Signal) error {
	log.Info("starting portforwardd", "version", buildVersion(), "listen", o.listen,
		"metrics_listen", o.metricsListen, "netns_dir", o.netnsDir)
	if err := nsenter.Prepare(); err != nil {
		return err
	}
	switch st, err := os.Stat(o.netnsDir); {
	case err != nil:
		log.Warn("netns directory is not there yet; pods resolve once it exists", "netns_dir", o.netnsDir, "err", err)
	case !st.IsDir():
		log.Warn("--netns-dir is not a directory; no pod resolves until it is one", "netns_dir", o.netnsDir)
	}
	metrics := server.NewMetrics(buildVersion())
	if o.logDropped != nil {
		metrics.SetLogDrops(o.logDropped)
	}
	sec, err := newSecurity(o, metrics, log)
	if err != nil {
		return err
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	if sec.certs != nil {
		go sec.certs.Watch(watchCtx, 10*time.Second)
	}
	var resolver nsenter.Resolver = nsenter.DirResolver{Dir: o.netnsDir}
	if o.criEndpoint != "" {
		conn, err := cri.Dial(o.criEndpoint)
		if err != nil {
			return fmt.Errorf("--cri-endpoint: %w", err)
		}
		defer conn.Close()
		resolver = cri.NewResolver(conn)
		log.Info("resolving pods through CRI", "endpoint", o.criEndpoint)
	}
	tokens := cri.NewTokens(o.criTokenTTL)
	srv := server.New(server.Config{
		Resolver:              resolver,
		Tokens:                criTokens{tokens},
		Dialer:                nsenter.Dialer{Timeout: o.dialTimeout},
		StreamIdleTimeout:     o.idleTimeout,
		StreamCreationTimeout: o.creationTimeout,
		ReadHeaderTimeout:     o.readHeaderTimeout,
		TLS:                   sec.tls,
		Auth:                  sec.auth,
		Limits:                o.limits,
		Pprof:                 o.pprof,
		Metrics:               metrics,
		Log:                   log,
	})

	act := o.activation
	if act == nil {
		act = &activation{files: map[string]*os.File{}, why: "no sockets were passed"}
	}
	defer act.closeUnclaimed(log)
	ln, err := openListener(act, "--listen", o.listen, o.reusePort)
	if err != nil {
		return err
	}
	var mln net.Listener
	if o.metricsListen != "" {
		if mln, err = openListener(act, "--metrics-listen", o.metricsListen, o.reusePort); err != nil {
			ln.Close()
			return err
		}
	}
	// A socket passed by the service manager is checked for what it
	// exposes once it is known, as a flag's address is at start.
	if err := checkListeners(o, ln, mln); err != nil {
		ln.Close()
		if mln != nil {
			mln.Close()
		}
		return err
	}
	if o.reusePort {
		if ok, why := migrateReq(migrateReqFile); ok {
			log.Info("listening with SO_REUSEPORT; connections queued when a listener closes go to the others")
		} else {
			log.Warn("listening with SO_REUSEPORT, but connections queued on this daemon's listener when it closes will be reset, not handed to the next daemon: set net.ipv4.tcp_migrate_req=1", "why", why)
		}
	}
	if sec.auth == nil && !loopbackAddress(ln.Addr().String()) {
		log.Warn("the port-forward listener is not on a loopback address and authenticates nobody", "listen", ln.Addr().String())
	}
	httpSrv := srv.NewHTTPServer()
	errc := make(chan error, 3)
	go func() { errc <- serveListener(httpSrv, srv.Listener(ln), "listen") }()

	var metricsSrv *http.Server
	if mln != nil {
		metricsSrv = srv.NewMetricsHTTPServer()
		go func() { errc <- serveListener(metricsSrv, srv.MetricsListener(mln), "metrics-listen") }()
		log.Info("serving metrics", "addr", mln.Addr().String())
	}
	srv.MarkServing()
	log.Info("serving port-forward", "addr", ln.Addr().String(), "tls", sec.tls != nil, "auth", sec.mode)
	var proxy *criProxy
	if o.criListen != "" {
		proxy, err = startCRIProxy(o, act, tokens, srv, streamBaseURL(o.streamURL, ln.Addr(), sec.tls != nil), metrics, log)
		if err != nil {
			httpSrv.Close()
			return err
		}
		go func() { errc <- <-proxy.errc }()
	}
	act.closeUnclaimed(log)

	var serveErr error
	select {
	case sig := <-sigc:
		log.Info("shutting down", "signal", sig.String(), "drain_timeout", o.drainTimeout.String(),
			"sessions", srv.Sessions())
	case serveErr = <-errc:
		log.Error("listener failed; shutting down", "err", serveErr, "drain_timeout", o.drainTimeout.String(),
			"sessions", srv.Sessions())
	}

	drainCtx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	// now ends with a second signal: what is left stops at once. It is
	// listened for until serve returns, not only until the drain's
	// deadline: the CRI proxy's grace comes after a drain cut short too.
	now, stopNow := context.WithCancel(context.Background())
	defer stopNow()
	go func() {
		select {
		case sig := <-sigc:
			log.Warn("second signal: closing every session now", "signal", sig.String())
			cancel()
			stopNow()
		case <-now.Done():
		}
	}()
	// The CRI proxy goes on passing the kubelet's calls to the runtime
	// while the forwarding server drains (a PortForward goes to the
	// runtime, since the server is no longer ready), and stops once the
	// drain is over, below: the kubelet keeps its runtime for all but the
	// last criStopGrace and the restart.
	// Stop accepting, and drain at the same time: upgraded connections are
	// not the http.Server's any more, the Server drains them, while
	// Shutdown waits for HTTP/2 streams (sessions too, which Drain ends at
	// the deadline) to finish. Past the deadline, what is left is closed.
	//
	// The listener closes first, and the http.Server is shut down only
	// once the connections it accepted have sent their requests: Shutdown
	// drops a request it reads after it began, without an answer, and a
	// client that had connected a moment before the signal (or was in
	// its TLS handshake) saw its connection close. A draining server
	// answers it (servedWhileDraining).
	ln.Close()
	if o.reusePort && metricsSrv != nil {
		// The next daemon answers the probes and scrapes on the shared
		// port from now on; this one's /readyz would say 503 to its
		// readiness probe.
		go func() {
			ctx, cancel := context.WithTimeout(now, time.Second)
			defer cancel()
			metricsSrv.Shutdown(ctx)
		}()
	}
	shutDone := make(chan struct{})
	go func() {
		defer close(shutDone)
		// At most as long as Shutdown itself waits for a connection
		// that sends nothing (net/http closes it at 5 s).
		awaitCtx, cancelAwait := context.WithTimeout(drainCtx, 5*time.Second)
		srv.AwaitAccepted(awaitCtx)
		cancelAwait()
		if err := httpSrv.Shutdown(drainCtx); err != nil {
			httpSrv.Close()
		}
	}()
	drainStart := time.Now()
	err = srv.Drain(drainCtx)
	<-shutDone
	if err == nil {
		// The requests the last connections accepted brought in while
		// Shutdown read them (a connect-tcp, an HTTP/2 stream), which a
		// draining server still serves.
		err = srv.Drain(drainCtx)
	}
	var cut *server.DrainCutShortError
	if errors.As(err, &cut) {
		log.Warn("drain cut short; remaining sessions were closed", "sessions", cut.Sessions, "err", cut.Err)
	} else {
		log.Info("drained", "duration", time.Since(drainStart).Round(time.Millisecond))
	}
	if proxy != nil {
		// Calls in flight get criStopGrace, then are cut: a
		// GetContainerEvents never ends, a PullImage may take minutes, and
		// the kubelet calls again, as after a runtime restart.
		graceCtx, cancelGrace := context.WithTimeout(now, criStopGrace)
		proxy.stop(graceCtx)
		cancelGrace()
	}
	if metricsSrv != nil {
		shutCtx, cancelShut := context.WithTimeout(now, time.Second)
		metricsSrv.Shutdown(shutCtx)
		cancelShut()
	}
	log.Info("stopped")
	return serveErr
}

func serveListener(hs *http.Server, ln net.Listener, name string) error {
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve --%s: %w", name, err)
}
