// Command portforwardd is a node-side Kubernetes port-forward server: it
// accepts the kubelet's /portForward upgrades, enters the pod's network
// namespace with setns(2), and forwards each stream to the pod's loopback.
// Run with -h for its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
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
	readHeaderTimeout     time.Duration
	logLevel, logFormat   string
	showVersion           bool
	pprof                 bool
	criListen             string
	criUpstream           string
	criEndpoint           string
	streamURL             string
	criTokenTTL           time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("portforwardd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:10350", "address of the port-forward listener (`host:port`)")
	fs.StringVar(&o.metricsListen, "metrics-listen", "127.0.0.1:10351", "address for /metrics, /healthz and /readyz; empty disables it")
	fs.StringVar(&o.netnsDir, "netns-dir", nsenter.DefaultNetnsDir, "directory of network namespace files; pod NS/NAME is <dir>/NS_NAME")
	fs.DurationVar(&o.idleTimeout, "stream-idle-timeout", 4*time.Hour, "close a connection with no traffic (pings count) for this long; 0 disables")
	fs.DurationVar(&o.creationTimeout, "stream-creation-timeout", 30*time.Second, "how long the first stream of a pair waits for the second")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", nsenter.DefaultDialTimeout, "bound on each connect attempt inside a pod (127.0.0.1, then [::1])")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM/SIGINT, how long forwarded connections may take to finish")
	fs.DurationVar(&o.readHeaderTimeout, "read-header-timeout", server.DefaultReadHeaderTimeout, "how long a client may take to send its request headers")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&o.pprof, "pprof", false, "serve /debug/pprof/ on the metrics listener")
	fs.StringVar(&o.criListen, "cri-listen", "", "serve the CRI proxy on this `unix:///path` (point the kubelet's containerRuntimeEndpoint here); empty disables it")
	fs.StringVar(&o.criUpstream, "cri-upstream", "unix:///var/run/crio/crio.sock", "the runtime's CRI socket the proxy forwards to")
	fs.StringVar(&o.criEndpoint, "cri-endpoint", "", "resolve /portForward/{namespace}/{pod} through this CRI socket (`unix:///path`) instead of --netns-dir")
	fs.StringVar(&o.streamURL, "stream-url", "", "base of the URLs the CRI proxy hands out (default: http:// and the --listen address, 127.0.0.1 for a wildcard host)")
	fs.DurationVar(&o.criTokenTTL, "cri-token-ttl", cri.TokenTTL, "how long a PortForward URL stays valid (single use either way)")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
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
	}
	for name, v := range map[string]string{"--cri-listen": o.criListen, "--cri-endpoint": o.criEndpoint} {
		if v == "" {
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
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
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
	log, err := newLogger(o.logLevel, o.logFormat, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "portforwardd: %v\n", err)
		return 2
	}
	if err := serve(o, log); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

func serve(o options, log *slog.Logger) error {
	log.Info("starting portforwardd", "version", buildVersion(), "listen", o.listen,
		"metrics_listen", o.metricsListen, "netns_dir", o.netnsDir)
	if err := nsenter.Prepare(); err != nil {
		return err
	}
	if st, err := os.Stat(o.netnsDir); err != nil || !st.IsDir() {
		log.Warn("netns directory is not there yet; pods resolve once it exists", "netns_dir", o.netnsDir)
	}
	if host, _, err := net.SplitHostPort(o.listen); err == nil {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			log.Warn("the port-forward listener is not on a loopback address and has no authentication", "listen", o.listen)
		}
	}

	metrics := server.NewMetrics(buildVersion())
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
		Pprof:                 o.pprof,
		Metrics:               metrics,
		Log:                   log,
	})

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen on --listen %s: %w", o.listen, err)
	}
	httpSrv := srv.NewHTTPServer()
	errc := make(chan error, 3)
	go func() { errc <- serveListener(httpSrv, ln, "listen") }()

	var metricsSrv *http.Server
	if o.metricsListen != "" {
		mln, err := net.Listen("tcp", o.metricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on --metrics-listen %s: %w", o.metricsListen, err)
		}
		metricsSrv = srv.NewMetricsHTTPServer()
		go func() { errc <- serveListener(metricsSrv, mln, "metrics-listen") }()
		log.Info("serving metrics", "addr", mln.Addr().String())
	}
	srv.MarkServing()
	log.Info("serving port-forward", "addr", ln.Addr().String())
	var proxy *criProxy
	if o.criListen != "" {
		proxy, err = startCRIProxy(o, tokens, srv, streamBaseURL(o.streamURL, ln.Addr()), metrics, log)
		if err != nil {
			httpSrv.Close()
			return err
		}
		go func() { errc <- <-proxy.errc }()
	}

	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigc)
	var serveErr error
	select {
	case sig := <-sigc:
		log.Info("shutting down", "signal", sig.String(), "drain_timeout", o.drainTimeout)
	case serveErr = <-errc:
		log.Error("listener failed; shutting down", "err", serveErr)
	}

	drainCtx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	go func() {
		select {
		case sig := <-sigc:
			log.Warn("second signal: closing every session now", "signal", sig.String())
			cancel()
		case <-drainCtx.Done():
		}
	}()
	// The CRI proxy goes first: the kubelet then sees the runtime as down
	// rather than getting URLs of a server that is draining.
	if proxy != nil {
		proxy.stop(drainCtx)
	}
	// Stop accepting; upgraded connections are not the http.Server's any
	// more, the Server drains them.
	httpSrv.Shutdown(drainCtx)
	if err := srv.Drain(drainCtx); err != nil {
		log.Warn("drain cut short; remaining sessions were closed", "err", err)
	}
	if metricsSrv != nil {
		shutCtx, cancelShut := context.WithTimeout(context.Background(), time.Second)
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
