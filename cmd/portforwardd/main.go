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
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/portforwardd/portforwardd/cmd/internal/buildinfo"
	"github.com/portforwardd/portforwardd/cri"
	"github.com/portforwardd/portforwardd/nsenter"
	"github.com/portforwardd/portforwardd/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
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

func buildVersion() string { return buildinfo.Version(version) }

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
