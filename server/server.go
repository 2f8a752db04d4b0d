package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/portforwardd/portforwardd/nsenter"
	"github.com/portforwardd/portforwardd/server/auth"
	"github.com/portforwardd/portforwardd/streams"
)

// Dialer connects to a port inside a network namespace. nsenter.Dialer is
// the production one.
type Dialer interface {
	Dial(ctx context.Context, t nsenter.Target, port uint16) (*net.TCPConn, error)
}

// Config configures a Server. Zero durations mean the defaults named.
type Config struct {
	// Resolver maps pods to network namespaces. Required.
	Resolver nsenter.Resolver
	// Tokens redeems /portforward/{token} URLs; nil answers them 404.
	Tokens Tokens
	// Dialer dials inside a namespace; nil means nsenter.Dialer{}.
	Dialer Dialer
	// StreamIdleTimeout closes a session with no frame in either direction
	// for this long, and resets a raw forward or an HTTP/2 stream that moved
	// no byte either way for this long (streams.Watch); zero disables it.
	// The daemon's default is 4h.
	StreamIdleTimeout time.Duration
	// StreamCreationTimeout is how long the first stream of a pair waits
	// for the second; zero means streams.DefaultCreationTimeout.
	StreamCreationTimeout time.Duration
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers (slow or never-finished upgrades); zero means
	// DefaultReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
	// IdleConnTimeout closes a keep-alive connection of either listener,
	// and an HTTP/2 connection with no open stream, after this long
	// without a request, and a metrics-listener connection whose client
	// has not taken an answer this long; zero means
	// DefaultIdleConnTimeout.
	IdleConnTimeout time.Duration
	// TLS, if set, makes the forwarding listener TLS (see Listener); HTTP/2
	// is then negotiated with ALPN.
	TLS *tls.Config
	// Auth, if set, authenticates and authorizes every request on the
	// /portForward routes (the /portforward/{token} route is its own
	// credential); nil lets every client through.
	Auth *auth.Authenticator
	// Limits bound sessions, streams and buffered bytes.
	Limits Limits
	// Pprof serves /debug/pprof/ on the metrics listener.
	Pprof bool
	// Metrics receives counts; nil means a private, unexported set.
	Metrics *Metrics
	// Log receives lifecycle events; nil discards them.
	Log *slog.Logger
}

// Tokens redeems the single-use tokens of /portforward/{token} URLs (see
// package cri).
type Tokens interface {
	// Redeem returns what token grants and forgets it; false for an
	// unknown, used or expired token.
	Redeem(token string) (TokenGrant, bool)
}

// TokenGrant is one redeemed token: a sandbox, its network namespace, and
// the ports of the CRI request (WebSocket v4 clients that name none in
// their query forward these).
type TokenGrant struct {
	SandboxID string
	Target    nsenter.Target
	Ports     []uint16
}

// Server serves port-forward requests. Use it as the http.Handler of the
// forwarding listener (see NewHTTPServer) and call Drain on shutdown.
type Server struct {
	cfg    Config
	dialer Dialer
	m      *Metrics
	log    *slog.Logger
	slots  chan struct{}   // one per session served, MaxSessions deep
	rel    releaser        // hands freed memory back after sessions end
	budget *streams.Budget // client data held by all SPDY and v4 WebSocket sessions
	// h2Stalls are the node's HTTP/2 streams whose pods take nothing.
	h2Stalls *h2Stalls
	h2       *http.HTTP2Config

	ctx    context.Context // ends every session when canceled
	cancel context.CancelFunc

	mu       sync.Mutex
	sessions map[*sessionEntry]struct{}
	serving  bool // the listener is up
	draining bool
	shutDown bool // an http.Server from NewHTTPServer began its Shutdown
	// inflight counts the requests entered and the sessions running, for
	// Drain; fresh, the connections accepted whose first request has not
	// come, for AwaitAccepted.
	inflight counter
	fresh    counter
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, dialer: cfg.Dialer, m: cfg.Metrics, log: cfg.Log, sessions: map[*sessionEntry]struct{}{}}
	if s.dialer == nil {
		s.dialer = nsenter.Dialer{}
	}
	if s.m == nil {
		s.m = NewMetrics("")
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.cfg.Limits.defaults()
	l := s.cfg.Limits
	s.slots = make(chan struct{}, l.MaxSessions)
	s.budget = streams.NewBudget(l.BufferBytes)
	s.h2Stalls = newH2Stalls(l, false)
	s.m.budget.Store(s.budget)
	h2 := *h2Config
	h2.MaxConcurrentStreams = l.MaxStreamsPerSession
	// HTTP/2's flow control holds clients to the same per-stream and
	// per-connection bounds as the SPDY engine's buffers.
	h2.MaxReceiveBufferPerStream = l.StreamBufferBytes
	h2.MaxReceiveBufferPerConnection = l.SessionBufferBytes
	s.h2 = &h2
	for name, v := range map[string]float64{
		limitSessions: float64(l.MaxSessions), streams.LimitStreams: float64(l.MaxStreamsPerSession),
		streams.LimitPendingStreams: float64(l.MaxPendingStreams), streams.LimitStreamBuffer: float64(l.StreamBufferBytes),
		streams.LimitSessionBuffer: float64(l.SessionBufferBytes), streams.LimitGlobalBuffer: float64(l.BufferBytes),
		limitHeaderBytes: float64(l.MaxHeaderBytes), limitReadHeaderTimeout: s.readHeaderTimeout().Seconds(),
	} {
		s.m.limits.WithLabelValues(name).Set(v)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// NewHTTPServer returns the http.Server for the forwarding listener: header
// reads are bounded in time and size; upgraded connections have no
// deadline (the session's idle timeout governs them).
func (s *Server) NewHTTPServer() *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	protocols.SetHTTP2(true)            // h2 over TLS, by ALPN
	hs := &http.Server{
		Handler:           s,
		Protocols:         &protocols,
		HTTP2:             s.h2,
		ConnContext:       connContext,
		ConnState:         s.connState, // the idle timeout: see closeIdle
		ReadHeaderTimeout: s.readHeaderTimeout(),
		// For the answers Go's HTTP/2 server gives itself, without the
		// handler (a header block over MaxHeaderBytes, a header HTTP/2
		// forbids): a client that gives no flow-control window never
		// takes their body, and the stream and its goroutine were held
		// for good. The handler lifts it (see ServeHTTP). Not below
		// ReadHeaderTimeout, which bounds the TLS handshake (net/http
		// takes the least of the two).
		WriteTimeout:   max(s.idleConnTimeout(), s.readHeaderTimeout()),
		MaxHeaderBytes: s.cfg.Limits.MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	// Its HTTP/2 connections get Go's GOAWAY from now on, not ours
	// (closeIdle).
	hs.RegisterOnShutdown(func() {
		s.mu.Lock()
		s.shutDown = true
		s.mu.Unlock()
	})
	return hs
}

// DefaultReadHeaderTimeout is Config.ReadHeaderTimeout's default.
const DefaultReadHeaderTimeout = 10 * time.Second

func (s *Server) readHeaderTimeout() time.Duration {
	if s.cfg.ReadHeaderTimeout > 0 {
		return s.cfg.ReadHeaderTimeout
	}
	return DefaultReadHeaderTimeout
}

// answerTimeout bounds the write of an upgrade's 101, which comes after
// the handler lifted the http.Server's write deadline, and before a
// session that the drain could end has begun: a client that does not
// read (it pipelined requests and left their answers unread) held the
// handler, and the drain, for good. It is the time a client has to send
// its request headers.
func (s *Server) answerTimeout() time.Duration { return s.readHeaderTimeout() }

// DefaultIdleConnTimeout is Config.IdleConnTimeout's default, the
// kubelet's.
const DefaultIdleConnTimeout = 90 * time.Second

func (s *Server) idleConnTimeout() time.Duration {
	if s.cfg.IdleConnTimeout > 0 {
		return s.cfg.IdleConnTimeout
	}
	return DefaultIdleConnTimeout
}

// allowedMethods are the methods a route answers over r's protocol: an
// HTTP/2 stream forwards with POST only (no GET is an upgrade), and the
// CRI proxy's token routes answer no OPTIONS.
func allowedMethods(r *http.Request, isToken bool) []string {
	allow := []string{http.MethodGet, http.MethodPost}
	if r.ProtoMajor == 2 {
		allow = []string{http.MethodPost}
	}
	if !isToken {
		allow = append(allow, http.MethodOptions)
	}
	return allow
}

// ServeHTTP answers one port-forward request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	markServed(r.Context())
	// The http.Server's WriteTimeout is for the answers it gives itself:
	// a forward lasts as long as it moves bytes, and a refusal sets its
	// own (see fail).
	http.NewResponseController(w).SetWriteDeadline(time.Time{})
	pod, ok := parseRoute(r.URL.EscapedPath())
	token, isToken := parseTokenRoute(r.URL.EscapedPath())
	if !ok && !isToken {
		s.fail(w, r, &requestError{status: http.StatusNotFound, reason: "no_route", msg: "404 page not found"})
		return
	}
	if allow := allowedMethods(r, isToken); !slices.Contains(allow, r.Method) {
		msg := "method not allowed: use GET or POST"
		if r.ProtoMajor == 2 {
			msg = "HTTP/2 port-forward streams are POST requests"
		}
		s.fail(w, r, &requestError{status: http.StatusMethodNotAllowed, reason: "method",
			msg: msg, header: http.Header{"Allow": {strings.Join(allow, ", ")}}})
		return
	}
	if !isToken && s.cfg.Auth != nil {
		user, aerr := s.cfg.Auth.Check(r)
		if aerr != nil {
			s.fail(w, r, &requestError{status: aerr.Status, reason: "auth_" + aerr.Reason, msg: aerr.Msg})
			return
		}
		s.log.Debug("request authorized", "user", user.Name, "path", r.URL.EscapedPath(), "remote", r.RemoteAddr)
		// The session's lines say who forwarded: an audit trail of who
		// reached which pod, at the default level.
		r = r.WithContext(context.WithValue(r.Context(), userKey{}, user.Name))
	}
	var grant TokenGrant
	if isToken {
		// Redeemed first, as the kubelet's streaming library does: a token
		// is spent by any request that names it.
		if s.cfg.Tokens != nil {
			grant, ok = s.cfg.Tokens.Redeem(token)
		}
		if !ok {
			s.fail(w, r, &requestError{status: http.StatusNotFound, reason: "unknown_token", msg: "404 page not found"})
			return
		}
		pod = nsenter.Pod{Name: grant.SandboxID}
	} else if err := pod.Validate(); err != nil {
		s.fail(w, r, &requestError{status: http.StatusBadRequest, reason: "invalid_pod", msg: err.Error()})
		return
	}
	if !s.enter(r) {
		s.fail(w, r, &requestError{status: http.StatusServiceUnavailable, reason: "shutting_down", msg: "server is shutting down"})
		return
	}
	defer s.leave()
	if r.Method == http.MethodOptions {
		s.answerOptions(w, r, pod)
		return
	}
	if !s.acquireSession(w, r) {
		return
	}
	defer s.releaseSession()
	// The kubelet validates the v4 query before it looks the pod up.
	var choice wsChoice
	var ports []uint16
	isWS, isRaw := isWebSocket(r.Header), isConnectTCP(r.Header)
	isH2 := r.ProtoMajor == 2
	if isRaw || isH2 {
		var rerr *requestError
		if ports, rerr = parsePortQuery(r.URL.Query()); rerr == nil && len(ports) != 1 {
			rerr = &requestError{status: http.StatusBadRequest, reason: "bad_port",
				msg: "a connect-tcp or HTTP/2 stream forwards exactly one port: give one \"port\" query parameter"}
		}
		if rerr != nil {
			s.fail(w, r, rerr)
			return
		}
	}
	if isWS {
		var rerr *requestError
		if choice, rerr = negotiateWebSocket(r.Header); rerr == nil && !choice.tunnel {
			if isToken && len(grant.Ports) > 0 && !r.URL.Query().Has("port") {
				ports = grant.Ports
			} else {
				ports, rerr = parsePortQuery(r.URL.Query())
			}
		}
		if rerr != nil {
			s.fail(w, r, rerr)
			return
		}
	}
	target, err := grant.Target, error(nil)
	if !isToken {
		target, err = s.cfg.Resolver.Resolve(r.Context(), pod)
	}
	switch {
	case errors.Is(err, nsenter.ErrPodNotFound):
		s.fail(w, r, &requestError{status: http.StatusNotFound, reason: "not_found", msg: "pod does not exist"})
		return
	case err != nil:
		s.fail(w, r, resolveError(pod, err))
		return
	}
	if isWS {
		s.serveWebSocket(w, r, pod, target, choice, ports)
		return
	}
	if isRaw {
		s.serveRaw(w, r, pod, target, ports[0])
		return
	}
	if isH2 {
		s.serveH2(w, r, pod, target, ports[0])
		return
	}
	if rerr := checkSPDYUpgrade(r.Header); rerr != nil {
		s.fail(w, r, rerr)
		return
	}
	protocol, rerr := negotiateProtocol(r.Header)
	if rerr != nil {
		s.fail(w, r, rerr)
		return
	}
	s.serveSPDY(w, r, pod, target, protocol)
}

// resolveError is the answer to a pod that could not be resolved for a
// reason other than its absence: the daemon's own failure. A daemon out of
// file descriptors or memory says so (the pod's namespace may be fine),
// with the errno's text only: the cause's path is the daemon's business.
func resolveError(pod nsenter.Pod, err error) *requestError {
	msg := fmt.Sprintf("unable to find the network namespace of pod %s", pod)
	if errno := nsenter.Shortage(err); errno != 0 {
		msg = fmt.Sprintf("unable to open the network namespace of pod %s: %v", pod, errno)
	}
	return &requestError{status: http.StatusInternalServerError, reason: "resolve", msg: msg, err: err}
}

// logPath is r's path for the log: a token route's token is left out,
// since a request refused before redeeming it (a wrong method) leaves it
// valid, and logs are read more widely than the daemon's socket.
func logPath(r *http.Request) string {
	if _, ok := parseTokenRoute(r.URL.EscapedPath()); ok {
		return "/portforward/<token>"
	}
	return r.URL.EscapedPath()
}

// fail answers a request that will not be upgraded and closes its
// connection: after a refused upgrade the client's next bytes may be
// anything. It logs the refusal once, at e's level; the answer's text is
// under "answer", since "msg" is the line's own message.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, e *requestError) {
	s.m.upgradeFailures.WithLabelValues(e.reason).Inc()
	if level := e.level(); s.log.Enabled(r.Context(), level) {
		attrs := []any{"path", logPath(r), "method", r.Method, "remote", r.RemoteAddr,
			"status", e.status, "reason", e.reason, "answer", e.msg}
		if e.err != nil {
			attrs = append(attrs, "err", e.err)
		}
		s.log.Log(r.Context(), level, "request refused", attrs...)
	}
	for k, vs := range e.header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
		skipBody(w, r)
	} else {
		// An HTTP/2 client that gives no flow-control window never takes
		// the answer's body, and Go's server holds the stream and its
		// handler's goroutine until it does: the connection's idle timeout
		// counts connections with no open stream only. A refusal not
		// taken within it resets the stream.
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.idleConnTimeout()))
	}
	http.Error(w, e.msg, e.status)
}

// skipBody keeps net/http from waiting for the body of an HTTP/1 request
// that will not be read (a refusal, an OPTIONS): it reads up to 256 KiB of
// it, with no deadline, after the answer, or before a keep-alive one, so a
// client that declared a body and never sent it held the connection and
// its goroutine for as long as it liked. With a read deadline in the past
// the body is left unread and the connection is closed after the answer.
func skipBody(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 || r.ContentLength == 0 {
		return
	}
	w.Header().Set("Connection", "close")
	http.NewResponseController(w).SetReadDeadline(time.Unix(1, 0))
}

// Values of the protocol label of the metrics.
const (
	protocolSPDY     = "spdy"
	protocolTunnel   = "spdy_websocket"
	protocolV4Binary = "websocket_v4"
	protocolV4Base64 = "websocket_v4_base64"
)

// sessionEntry is a session in the drain registry.
type sessionEntry struct{ drain func() }

// userKey is the request context's key of the name of the user who was
// authenticated and authorized for it.
type userKey struct{}

// requestLog is the logger of an upgraded request's lines: pod, remote,
// protocol, and the user the request was authorized for, when one was.
func (s *Server) requestLog(r *http.Request, pod nsenter.Pod, protocol string) *slog.Logger {
	log := s.log.With("pod", pod.String(), "remote", r.RemoteAddr, "protocol", protocol)
	if user, ok := r.Context().Value(userKey{}).(string); ok {
		log = log.With("user", user)
	}
	return log
}

// sessionLog is requestLog's logger with the session id, and the port for
// the transports that forward one.
func (s *Server) sessionLog(r *http.Request, pod nsenter.Pod, protocol string, port uint16) *slog.Logger {
	log := s.requestLog(r, pod, protocol).With("session", streams.NextSessionID())
	if port != 0 {
		log = log.With("port", port)
	}
	return log
}

// runSession registers a session for draining and runs it to the end;
// log carries the session's pod, remote, protocol and id.
func (s *Server) runSession(drain func(), protocol string, log *slog.Logger, run func(context.Context)) {
	e := &sessionEntry{drain: drain}
	s.mu.Lock()
	s.sessions[e] = struct{}{}
	s.inflight.n++ // within the request's own count: never from zero
	draining := s.draining
	s.mu.Unlock()
	if draining {
		drain()
	}
	active := s.m.sessionsActive.WithLabelValues(protocol)
	active.Inc()
	start := time.Now()
	log.Info("session started")

	// Deferred: an HTTP/2 stream ends a reset by panicking with
	// http.ErrAbortHandler through here.
	defer func() {
		s.mu.Lock()
		delete(s.sessions, e)
		result := "closed"
		if s.draining {
			result = "shutdown"
		}
		idle := len(s.sessions) == 0
		s.mu.Unlock()
		s.releaseMemory(idle)
		active.Dec()
		s.m.sessionsTotal.WithLabelValues(protocol, result).Inc()
		log.Info("session ended", "result", result, "duration", time.Since(start).Round(time.Millisecond).String())
		s.leave()
	}()
	run(s.ctx)
}

// dialFunc dials ports of one pod, recording latency and failures.
func (s *Server) dialFunc(target nsenter.Target) streams.DialFunc {
	return func(ctx context.Context, port uint16) (streams.PodConn, error) {
		start := time.Now()
		c, err := s.dialer.Dial(ctx, target, port)
		s.m.dialDuration.Observe(time.Since(start).Seconds())
		if err != nil {
			s.m.dialErrors.WithLabelValues(nsenter.Reason(err)).Inc()
			return nil, err
		}
		return c, nil
	}
}
