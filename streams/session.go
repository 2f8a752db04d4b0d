package streams

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Config fields left zero.
const (
	// DefaultCreationTimeout is the kubelet's DefaultStreamCreationTimeout:
	// how long the first stream of a pair waits for the second.
	DefaultCreationTimeout = 30 * time.Second
	// DefaultMaxPendingPairs bounds the pairs waiting for their second
	// stream in one session.
	DefaultMaxPendingPairs = 1024
)

// DialFunc connects to port in the pod of a session.
type DialFunc func(ctx context.Context, port uint16) (PodConn, error)

// Config describes one port-forward session.
type Config struct {
	// Pod and UID appear in error texts, as the kubelet's pod and uid.
	Pod, UID string
	// Dial connects to a port of the pod. Required.
	Dial DialFunc
	// CreationTimeout is how long a pair waits for its second stream;
	// zero means DefaultCreationTimeout.
	CreationTimeout time.Duration
	// MaxPendingPairs bounds incomplete pairs; zero means
	// DefaultMaxPendingPairs.
	MaxPendingPairs int
	// Observer receives counts; nil means NopObserver.
	Observer Observer
	// OnLimit, if set, is told when a stream is refused because
	// MaxPendingPairs pairs are waiting (LimitPendingStreams).
	OnLimit func(limit string)
	// Log receives per-stream events at debug level; nil discards them.
	Log *slog.Logger
}

var sessionSeq atomic.Uint64

// NextSessionID returns a new session id from the sequence Sessions take
// theirs from, for the log lines of sessions served elsewhere (the raw,
// HTTP/2 and WebSocket v4 transports), so that ids do not repeat across
// transports.
func NextSessionID() uint64 { return sessionSeq.Add(1) }

// Session is the portforward.k8s.io protocol over one multiplexed
// connection: streams arrive through Accept, are paired, and each complete
// pair is forwarded to the pod. Create it with NewSession, hand Accept to
// the engine, then call Run.
type Session struct {
	cfg Config
	id  uint64
	obs Observer
	log *slog.Logger

	ctx    context.Context // canceled when Run ends; parent of forwards
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // forwards and drainers

	mu       sync.Mutex
	pairs    *pairTable
	active   int  // forwards running
	draining bool // no new pairs; Run ends when active drops to 0
	closed   bool
	idle     chan struct{} // closed when draining and active == 0
}

// NewSession returns a session that is ready to Accept streams.
func NewSession(cfg Config) *Session {
	if cfg.CreationTimeout <= 0 {
		cfg.CreationTimeout = DefaultCreationTimeout
	}
	if cfg.MaxPendingPairs <= 0 {
		cfg.MaxPendingPairs = DefaultMaxPendingPairs
	}
	s := &Session{
		cfg:   cfg,
		id:    NextSessionID(),
		obs:   cfg.Observer,
		log:   cfg.Log,
		pairs: newPairTable(cfg.MaxPendingPairs),
		idle:  make(chan struct{}),
	}
	if s.obs == nil {
		s.obs = NopObserver{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	return s
}

// ID returns the session's id, the "session" of its log lines.
func (s *Session) ID() uint64 { return s.id }

// Accept is the session's AcceptFunc. It validates the stream's headers
// and files it into its pair; it never blocks.
func (s *Session) Accept(st Stream) error {
	info, err := parseStreamHeaders(st.Headers(), st.ID())
	if err != nil {
		s.reject(st, err)
		return err
	}
	s.mu.Lock()
	if s.draining || s.closed {
		s.mu.Unlock()
		s.reject(st, ErrDraining)
		return ErrDraining
	}
	p, created, err := s.pairs.add(st, info)
	if err != nil {
		s.mu.Unlock()
		s.reject(st, err)
		return err
	}
	if p.complete() {
		if p.timer != nil {
			p.timer.Stop()
		}
		s.active++
		s.wg.Add(1)
		s.mu.Unlock()
		s.log.Debug("stream pair complete", "session", s.id, "request", p.requestID, "port", p.port)
		go s.forward(p)
		return nil
	}
	if created {
		p.timer = time.AfterFunc(s.cfg.CreationTimeout, func() { s.expire(p) })
	}
	s.mu.Unlock()
	return nil
}

func (s *Session) reject(st Stream, err error) {
	if errors.Is(err, ErrTooManyPending) && s.cfg.OnLimit != nil {
		s.cfg.OnLimit(LimitPendingStreams)
	}
	s.Refused(st.ID(), err)
}

// Refused counts a stream that never became part of a pair, as rejected:
// one Accept refused, or one the engine refused itself (a limit of the
// connection's, SPDYOptions.OnRefuse).
func (s *Session) Refused(id uint32, err error) {
	s.obs.StreamRejected(ResultRejected)
	s.log.Debug("stream rejected", "session", s.id, "stream", id, "err", err)
}

// expire ends a pair whose second stream did not come in time, the way the
// kubelet does: the text goes to the error stream if there is one.
func (s *Session) expire(p *pair) {
	s.mu.Lock()
	removed := s.pairs.remove(p)
	s.mu.Unlock()
	if !removed {
		return
	}
	s.obs.StreamRejected(ResultTimeout)
	msg := fmt.Sprintf("(conn=%d, request=%s) timed out waiting for streams", s.id, p.requestID)
	s.log.Debug("stream pair timed out", "session", s.id, "request", p.requestID)
	if p.errs != nil {
		p.errs.Write([]byte(msg))
		p.errs.CloseWrite()
		p.errs.Reset()
	}
	if p.data != nil {
		p.data.Reset()
	}
}

// forward serves one complete pair: dial, pump, and end both streams.
func (s *Session) forward(p *pair) {
	defer s.forwardDone()
	s.obs.ForwardStarted()

	// Clients half-close the error stream at once and never write to it;
	// reading it to the end keeps a misbehaving one from stalling the
	// connection's frame reader. One that has already ended (client-go
	// half-closes it before it opens the data stream) needs no reader.
	if d, ok := p.errs.(drainer); !ok || !d.Drained() {
		s.wg.Add(1)
		go s.discard(p.errs)
	}

	// The dial and the pump give up as soon as the data stream is reset
	// or its connection ends: a pump waiting on a pod that neither reads
	// nor writes would otherwise hold the pod's socket until the pod
	// spoke or the session ended.
	ctx, stop := s.watch(p.data)
	pod, err := s.cfg.Dial(ctx, p.port)
	if err != nil && ctx.Err() != nil {
		// The dial was given up: the client reset the data stream (a
		// reset), or the connection or the session ended (aborted, as a
		// running pump would be). No pod failed; nothing goes on the
		// error stream.
		stop()
		res := causeResult(context.Cause(ctx))
		s.log.Debug("dial given up", "session", s.id, "request", p.requestID, "port", p.port, "result", res)
		s.obs.ForwardEnded(res)
		p.errs.CloseWrite()
		p.errs.Reset()
		p.data.Reset()
		return
	}
	if err != nil {
		stop()
		msg := fmt.Sprintf("error forwarding port %d to pod %s, uid %v: %v", p.port, s.cfg.Pod, s.cfg.UID, err)
		s.log.Info("dial failed", "session", s.id, "request", p.requestID, "port", p.port, "err", err)
		s.obs.ForwardEnded(ResultDialError)
		// The text, then FIN, as the kubelet ends the error stream (its
		// deferred Close is a half-close); Reset then lets go of it here
		// without an RST_STREAM. The data stream is reset: the kubelet
		// half-closes it too, but a client that went on sending would
		// have its bytes dropped with nothing said.
		p.errs.Write([]byte(msg))
		p.errs.CloseWrite()
		p.errs.Reset()
		p.data.Reset()
		return
	}
	res := Pump(ctx, p.data, pod, s.obs, 0)
	stop()
	s.log.Debug("forward done", "session", s.id, "request", p.requestID, "port", p.port,
		"result", res.Result, "up", res.Up, "down", res.Down, "err", res.Err)
	s.obs.ForwardEnded(res.Result)
	// Nothing is written for a reset: kubectl ≥ 1.23 ends the whole session
	// on any error-stream text, and a peer reset concerns this connection
	// only.
	p.errs.CloseWrite()
	p.errs.Reset() // local release; our FIN went first
	p.data.Reset()
}

// abortNotifier is a Stream that tells when it has been reset or its
// connection has ended, and why (spdy.Stream).
type abortNotifier interface {
	// AfterAbort calls f, in its own goroutine, once the stream is
	// aborted; stop unregisters f.
	AfterAbort(f func()) (stop func() bool)
	AbortErr() error
}

// drainer is a Stream that tells whether everything its peer sent has
// been read and no more will come (spdy.Stream).
type drainer interface{ Drained() bool }

// watch returns the context of the forward whose data stream is data: it
// ends with the session, and as soon as data is aborted, with data's
// error as its cause (wrapping ErrReset, and ErrConnClosed when the
// connection ended), so that a client resetting its stream holds no dial
// and no pump, and with them no goroutine, socket or namespace fd, for a
// stream it has let go of. stop ends the watch; call it before the
// forward resets data itself. The watch is a callback of the stream, not
// a goroutine waiting on it.
func (s *Session) watch(data Stream) (ctx context.Context, stop func()) {
	n, ok := data.(abortNotifier)
	if !ok {
		return s.ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(s.ctx)
	stopHook := n.AfterAbort(func() { cancel(fmt.Errorf("data stream: %w", n.AbortErr())) })
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			stopHook()
			cancel(nil)
		})
	}
}

func (s *Session) discard(st Stream) {
	defer s.wg.Done()
	io.Copy(io.Discard, st)
}

func (s *Session) forwardDone() {
	s.mu.Lock()
	s.active--
	if s.draining && s.active == 0 {
		s.closeIdle()
	}
	s.mu.Unlock()
	s.wg.Done()
}

// closeIdle closes s.idle once; s.mu must be held.
func (s *Session) closeIdle() {
	select {
	case <-s.idle:
	default:
		close(s.idle)
	}
}

// Drain stops the session from taking new pairs; Run returns once the
// forwards in flight are done. Streams of incomplete pairs are reset.
func (s *Session) Drain() {
	s.mu.Lock()
	s.draining = true
	pending := s.pairs.drain()
	if s.active == 0 {
		s.closeIdle()
	}
	s.mu.Unlock()
	s.resetPairs(pending)
}

// Run serves the session until conn ends, ctx is done, or a Drain has
// finished. It then closes conn, aborts forwards still running, and returns
// once every goroutine of the session has ended.
func (s *Session) Run(ctx context.Context, conn Conn) {
	select {
	case <-conn.Done():
	case <-ctx.Done():
	case <-s.idle:
	}
	s.mu.Lock()
	s.closed = true
	pending := s.pairs.drain()
	s.mu.Unlock()
	for _, p := range pending {
		if p.timer != nil {
			p.timer.Stop()
		}
	}
	s.resetPairs(pending)
	s.cancel(errors.New("session closed"))
	conn.Close()
	s.wg.Wait()
}

// resetPairs resets incomplete pairs at the session's drain or end; each
// counts as rejected, never having become a forwarded connection.
func (s *Session) resetPairs(ps []*pair) {
	for _, p := range ps {
		s.obs.StreamRejected(ResultRejected)
		if p.data != nil {
			p.data.Reset()
		}
		if p.errs != nil {
			p.errs.Reset()
		}
	}
}
