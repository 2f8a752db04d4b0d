package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/portforwardd/portforwardd/cri"
	"github.com/portforwardd/portforwardd/nsenter"
	"github.com/portforwardd/portforwardd/server"
	"github.com/portforwardd/portforwardd/server/auth"
)

// options is what the command line asks for.
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

// parseFlags reads args into options and refuses values and combinations
// the daemon cannot serve, or not as safely as asked (checkSecurityFlags).
// -h prints the usage to stderr and returns flag.ErrHelp.
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

// stringList is a comma-separated flag value.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// byteSize is a flag of a byte count: a number with an optional Ki, Mi or
// Gi suffix, stored in i64 or i.
type byteSize struct {
	i64 *int64
	i   *int
}

func (b byteSize) String() string {
	switch {
	case b.i64 != nil:
		return strconv.FormatInt(*b.i64, 10)
	case b.i != nil:
		return strconv.Itoa(*b.i)
	}
	return "0"
}

func (b byteSize) Set(v string) error {
	mult := int64(1)
	for suffix, m := range map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30} {
		if rest, ok := strings.CutSuffix(v, suffix); ok {
			v, mult = rest, m
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return errors.New("want a byte count such as 8388608, 8Mi or 1Gi (at most 1Ti)")
	}
	if b.i64 != nil {
		*b.i64 = n * mult
	} else {
		*b.i = int(n * mult)
	}
	return nil
}
