package spdy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portforwardd/portforwardd/streams/internal/pipe"
)

// Limits and defaults.
const (
	// MaxControlFrame bounds a control frame's payload; larger ones end
	// the connection.
	MaxControlFrame = 64 << 10

	DefaultStreamBuffer = 8 << 20
	DefaultConnBuffer   = 64 << 20
	DefaultStallTimeout = 10 * time.Second
	DefaultMaxStreams   = 2048
	DefaultMaxFrame     = 128 << 10

	// maxBatch bounds the bytes one writev carries, and maxBatchFrames
	// its frames, so that control frames are never queued behind more
	// than that.
	maxBatch       = 1 << 20
	maxBatchFrames = 256
	readBufferSize = 64 << 10
	// maxQueuedControl bounds the control frames (ping replies, resets,
	// window updates) waiting for a peer that does not read.
	maxQueuedControl = 1 << 20
)

// Options tune a connection. Zero values mean the defaults.
type Options struct {
	// IdleTimeout closes the connection after this long without a frame
	// in either direction; zero disables it.
	IdleTimeout time.Duration
	// StreamBuffer is the bytes one stream may hold unread; it is also
	// the window advertised to peers that honour flow control.
	StreamBuffer int
	// ConnBuffer is the bytes all streams of the connection may hold.
	ConnBuffer int
	// StallTimeout is how long the reader waits, with a budget exhausted,
	// for the consumer to read anything before it resets the stream.
	StallTimeout time.Duration
	// MaxStreams bounds the open streams; more are refused.
	MaxStreams int
	// MaxFrame bounds the payload of the DATA frames written.
	MaxFrame int
	// Reader, if set, is where frames are read from instead of the
	// connection (bytes a server had already buffered come first).
	Reader io.Reader
	// Global, if set, is a budget shared with other connections (see
	// Budget).
	Global *Budget
	// OnLimit, if set, is called (on the reader goroutine, or that of
	// another holder of Global when it resets a stale stream of this
	// one; without blocking) each time a limit is hit; limit is one of
	// the Limit* names.
	OnLimit func(limit string)
	// OnRefuse, if set, is called (on the reader goroutine, without
	// blocking) for each new stream the connection refuses itself,
	// without offering it to accept: past MaxStreams, after the peer's
	// GOAWAY, or with a header block it cannot read; err says why.
	OnRefuse func(id uint32, err error)
}

func (o *Options) defaults() {
	if o.StreamBuffer <= 0 {
		o.StreamBuffer = DefaultStreamBuffer
	}
	if o.ConnBuffer <= 0 {
		o.ConnBuffer = DefaultConnBuffer
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	if o.MaxFrame <= 0 || o.MaxFrame > maxFrameLength {
		o.MaxFrame = DefaultMaxFrame
	}
	if o.OnRefuse == nil {
		o.OnRefuse = func(uint32, error) {}
	}
	if o.OnLimit == nil {
		o.OnLimit = func(string) {}
	}
}

// Conn is the server side of one SPDY connection.
type Conn struct {
	nc     net.Conn
	br     *bufio.Reader
	opts   Options
	accept func(*Stream) error

	// Owned by the reader goroutine.
	hr       headerReader
	hw       headerWriter
	ctrlBuf  []byte
	held     int64  // bytes of the current DATA frame put in a stream's buffer
	spliced  bool   // the last DATA frame ended spliced from the socket (readHeader)
	lastID   uint32 // highest stream id the peer opened
	buffered atomic.Int64
	drained  chan struct{} // signalled when a consumer reads

	mu        sync.Mutex
	streams   map[uint32]*Stream
	goingAway bool

	wmu         sync.Mutex
	wake        chan struct{} // signalled when the writer has work
	ctrl        [][]byte      // queued control frames
	ctrlSize    int           // their bytes
	overflow    atomic.Bool   // the control queue overflowed; the reader stops
	connUnacked int           // bytes released since the last connection WINDOW_UPDATE
	active      []*Stream     // streams with data or FIN to send
	direct      bool          // nc takes vectored writes, so a Write may go direct
	tcp         *net.TCPConn  // nc, when it is a plain TCP socket (splice)
	spliceIn    bool          // tcp is set and frames are read from it alone: DATA may be spliced out of it
	writing     bool          // a goroutine is writing to nc (the writer, or a Write going direct)
	wclosed     bool          // the writer stopped; nothing more is sent
	closing     bool          // write what is queued, then stop
	writerOK    chan struct{} // closed when the writer goroutine exits

	lastActivity atomic.Int64 // time.Since(processStart) at the last frame either way
	idleTimer    *time.Timer
	done         chan struct{} // closed when the reader has finished
	shut         chan struct{} // closed when the connection is being torn down
	closeOnce    sync.Once
	err          error // why the connection ended; set before done closes
}

// Serve starts the server side of SPDY on nc, which must already carry
// the upgraded protocol. accept is called on the reader goroutine for each
// stream the client opens, before the SYN_REPLY; it must not block, and an
// error refuses the stream with RST_STREAM.
func Serve(nc net.Conn, accept func(*Stream) error, opts Options) *Conn {
	opts.defaults()
	r := opts.Reader
	if r == nil {
		r = nc
	}
	c := &Conn{
		nc:       nc,
		br:       bufio.NewReaderSize(r, readBufferSize),
		opts:     opts,
		accept:   accept,
		streams:  map[uint32]*Stream{},
		drained:  make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
		writerOK: make(chan struct{}),
		done:     make(chan struct{}),
		shut:     make(chan struct{}),
		direct:   vectored(nc),
	}
	c.tcp, _ = nc.(*net.TCPConn)
	c.spliceIn = c.tcp != nil && opts.Reader == nil
	c.touch()
	opts.Global.Join(c)
	// Peers that honour flow control may send a whole budget per stream
	// and per connection before they hear from us.
	c.queueControl(appendSettings(nil, settingsInitialWindowSize, uint32(opts.StreamBuffer)))
	if opts.ConnBuffer > 64<<10 {
		c.queueControl(appendWindowUpdate(nil, 0, uint32(opts.ConnBuffer-64<<10)))
	}
	if opts.IdleTimeout > 0 {
		c.idleTimer = time.AfterFunc(opts.IdleTimeout, c.checkIdle)
	}
	go c.writeLoop()
	go c.readLoop()
	return c
}

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the connection ended, once Done is closed.
func (c *Conn) Err() error {
	<-c.done
	return c.err
}

// Close sends GOAWAY, writes what is queued (for at most a second), closes
// the connection and resets every stream.
func (c *Conn) Close() error {
	c.goAway(goAwayOK)
	return nil
}

// touch records activity as the time since the process started, by the
// monotonic clock: a step of the wall clock (NTP, an operator) must not
// close live connections nor keep dead ones.
func (c *Conn) touch() { c.lastActivity.Store(int64(time.Since(processStart))) }

// processStart is the origin of lastActivity's monotonic readings.
var processStart = time.Now()

func (c *Conn) checkIdle() {
	idle := time.Since(processStart) - time.Duration(c.lastActivity.Load())
	if idle >= c.opts.IdleTimeout {
		c.goAway(goAwayOK)
		return
	}
	select {
	case <-c.done:
	default:
		c.idleTimer.Reset(c.opts.IdleTimeout - idle)
	}
}

// goAway queues GOAWAY with status, lets the writer flush, and tears the
// connection down.
func (c *Conn) goAway(status uint32) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.goingAway = true
		last := c.lastID
		c.mu.Unlock()
		c.wmu.Lock()
		if !c.wclosed {
			c.ctrl = append(c.ctrl, appendGoAway(nil, last, status))
			c.closing = true
			c.wakeWriter()
		}
		c.wmu.Unlock()
		select {
		case <-c.writerOK:
		case <-time.After(time.Second):
		}
		c.nc.Close()
		close(c.shut)
		if c.idleTimer != nil {
			c.idleTimer.Stop()
		}
		// A reader waiting for a consumer's room must not outlive the
		// connection.
		c.mu.Lock()
		streams := make([]*Stream, 0, len(c.streams))
		for _, st := range c.streams {
			streams = append(streams, st)
		}
		c.mu.Unlock()
		for _, st := range streams {
			c.account(-int64(st.abort(ErrConnClosed)))
		}
	})
}

// readLoop reads frames until the connection fails or is closed, then
// ends every stream and closes done.
func (c *Conn) readLoop() {
	err := c.readFrames()
	var ce *connError
	if errors.As(err, &ce) {
		c.goAway(ce.status)
	} else {
		c.goAway(goAwayOK)
	}
	c.mu.Lock()
	streams := c.streams
	c.streams = map[uint32]*Stream{}
	c.mu.Unlock()
	for _, s := range streams {
		c.account(-int64(s.abort(ErrConnClosed)))
	}
	c.stopWriter(ErrConnClosed)
	c.opts.Global.Leave(c)
	c.err = err
	close(c.done)
}

func (c *Conn) readFrames() error {
	var hdr [frameHeaderLen]byte
	for {
		if c.overflow.Load() {
			return &connError{status: goAwayInternalError, msg: "the peer does not read our control frames"}
		}
		if err := c.readHeader(hdr[:]); err != nil {
			return err
		}
		c.touch()
		h := parseFrameHeader(hdr[:])
		if !h.control {
			if err := c.readData(h); err != nil {
				return err
			}
			continue
		}
		if h.version != version {
			return protocolError("control frame of version %d", h.version)
		}
		if h.length > MaxControlFrame {
			return protocolError("control frame of %d bytes", h.length)
		}
		if cap(c.ctrlBuf) < int(h.length) {
			c.ctrlBuf = make([]byte, h.length, max(int(h.length), 1024))
		}
		p := c.ctrlBuf[:h.length]
		if _, err := io.ReadFull(c.br, p); err != nil {
			return err
		}
		if err := c.handleControl(h, p); err != nil {
			var se *streamError
			if errors.As(err, &se) {
				c.queueControl(appendRstStream(nil, se.stream, se.status))
				continue
			}
			return err
		}
	}
}

func (c *Conn) handleControl(h frameHeader, p []byte) error {
	u32 := func(i int) uint32 { return binary.BigEndian.Uint32(p[i:]) }
	need := func(n int) error {
		if len(p) < n {
			return protocolError("control frame type %d of %d bytes", h.typ, len(p))
		}
		return nil
	}
	switch h.typ {
	case typeSynStream:
		if err := need(10); err != nil {
			return err
		}
		return c.synStream(u32(0)&maxStreamID, h.flags, p[10:])
	case typeSynReply, typeHeaders:
		if err := need(4); err != nil {
			return err
		}
		// Clients have no business sending these for port-forward, but
		// their header blocks must still go through the inflater.
		if _, err := c.hr.read(p[4:]); err != nil && !errors.Is(err, errHeaderLimit) {
			return err
		}
	case typeRstStream:
		if err := need(8); err != nil {
			return err
		}
		c.peerReset(u32(0) & maxStreamID)
	case typeSettings:
		if err := need(4); err != nil {
			return err
		}
		if n := u32(0); uint64(n)*8 != uint64(len(p)-4) {
			return protocolError("SETTINGS with %d entries in %d bytes", n, len(p))
		}
		// Windows are not enforced on the send side; nothing to apply.
	case typePing:
		if err := need(4); err != nil {
			return err
		}
		if id := u32(0); id%2 == 1 { // the client's; even ids would be ours
			c.queueControl(appendPing(nil, id))
		}
	case typeGoAway:
		c.mu.Lock()
		c.goingAway = true
		c.mu.Unlock()
	case typeWindowUpdate:
		if err := need(8); err != nil {
			return err
		}
	default:
		// SPDY/3 2.2.1: unknown control frames are ignored.
	}
	return nil
}

func (c *Conn) synStream(id uint32, flags uint8, block []byte) error {
	headers, herr := c.hr.read(block) // always: the inflater must stay in step
	var ce *connError
	if errors.As(herr, &ce) {
		return herr
	}
	switch {
	case id == 0:
		// No RST_STREAM can name stream 0: the session is broken.
		return protocolError("SYN_STREAM for stream 0")
	case id%2 == 0:
		return &streamError{id, statusProtocolError, "client stream ids are odd"}
	case id <= c.lastID:
		// The RST_STREAM ends stream id on the client's side; a stream of
		// that id still open here must end too (SPDY/3 §2.3.2: a second
		// SYN_STREAM for a stream is a stream error on it).
		c.mu.Lock()
		open := c.streams[id]
		c.mu.Unlock()
		if open != nil && c.resetStream(open, statusProtocolError, false) {
			return nil // its RST_STREAM is queued
		}
		return &streamError{id, statusProtocolError, fmt.Sprintf("stream id %d after %d", id, c.lastID)}
	}
	c.mu.Lock() // goAway reads it from other goroutines
	c.lastID = id
	c.mu.Unlock()
	if herr != nil {
		c.opts.OnRefuse(id, herr)
		return &streamError{id, statusProtocolError, herr.Error()}
	}
	c.mu.Lock()
	refuse := c.goingAway || len(c.streams) >= c.opts.MaxStreams
	if !refuse {
		s := c.newStream(id, headers)
		c.streams[id] = s
		c.mu.Unlock()
		if flags&flagFin != 0 {
			s.remoteDone = true
			s.in.Finish(io.EOF)
		}
		if err := c.accept(s); err != nil {
			c.mu.Lock()
			delete(c.streams, id)
			c.mu.Unlock()
			c.account(-int64(s.abort(ErrReset)))
			s.wmuLocalDone()
			close(s.replied)
			return &streamError{id, statusCancel, err.Error()}
		}
		c.queueControl(appendSynReply(nil, id, c.hw.emptyBlock()))
		close(s.replied)
		return nil
	}
	goingAway := c.goingAway
	c.mu.Unlock()
	if !goingAway {
		c.opts.OnLimit(LimitStreams)
	}
	err := &streamError{id, statusRefusedStream, "too many streams or going away"}
	c.opts.OnRefuse(id, err)
	return err
}

func (c *Conn) newStream(id uint32, headers map[string][]string) *Stream {
	s := &Stream{c: c, id: id, headers: headers, in: pipe.New(c.opts.StreamBuffer),
		replied: make(chan struct{}), wdone: make(chan error, 1), aborted: make(chan struct{})}
	s.in.OnRead = func(n int) { s.lastUse.Store(int64(time.Since(processStart))); c.consumed(s, n) }
	s.in.OnPut = func(n int) {
		s.lastUse.Store(int64(time.Since(processStart)))
		c.held += int64(n)
		c.account(int64(n))
	}
	s.lastUse.Store(c.lastActivity.Load())
	return s
}

// readData delivers a DATA frame to its stream's pipe, waiting while the
// stream or the connection is over budget; a consumer that reads nothing
// for StallTimeout, nor progresses by its probe, gets its stream reset
// (FLOW_CONTROL_ERROR).
func (c *Conn) readData(h frameHeader) error {
	if h.stream == 0 {
		return protocolError("DATA on stream 0")
	}
	c.mu.Lock()
	s := c.streams[h.stream]
	remoteDone := s != nil && s.remoteDone
	c.mu.Unlock()
	n := int64(h.length)
	// What this frame brings that no buffer holds (discarded) goes back
	// to the peer's connection window at once.
	c.held = 0
	defer func() { c.credit(int(int64(h.length) - c.held)) }()
	switch {
	case s != nil && remoteDone:
		// DATA after the peer's FIN: STREAM_ALREADY_CLOSED, and the
		// stream is over both ways (SPDY/3 §2.3.6).
		c.resetStream(s, statusStreamAlreadyClose, false)
		_, err := io.CopyN(io.Discard, c.br, n)
		return err
	case s == nil:
		// Reset or finished streams still receive what was in flight.
		if h.stream > c.lastID {
			c.queueControl(appendRstStream(nil, h.stream, statusInvalidStream))
		}
		_, err := io.CopyN(io.Discard, c.br, n)
		return err
	}
	// While the stream's consumer waits on an empty buffer, the bytes
	// its pod's socket takes at once go there from here.
	n, err := c.readDirect(s, n)
	if err != nil {
		return err
	}
	if err := c.deliver(s, c.br, n); err != nil {
		return err
	}
	if h.flags&flagFin != 0 {
		c.finishRemote(s)
	}
	return nil
}

// deliver puts n bytes from r, part of a DATA frame, in s's buffer,
// waiting while the stream or the connection is over budget; a consumer
// that reads nothing for StallTimeout, nor progresses by its probe, gets
// its stream reset (FLOW_CONTROL_ERROR), and the rest is read and dropped.
func (c *Conn) deliver(s *Stream, r io.Reader, n int64) error {
	for n > 0 {
		if err := c.waitConnBudget(); err != nil {
			return err
		}
		chunk := min(n, int64(c.opts.StreamBuffer))
		put, err := s.in.PutFrom(r, int(chunk), c.opts.StallTimeout)
		n -= int64(put)
		if errors.Is(err, pipe.ErrStalled) {
			if s.progressed() {
				continue // the pod is taking bytes, slowly: wait again
			}
			c.opts.OnLimit(LimitStreamBuffer)
			c.resetStream(s, statusFlowControlError, true)
			_, err = io.CopyN(io.Discard, r, n)
			return err
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// finishRemote records the peer's FIN.
func (c *Conn) finishRemote(s *Stream) {
	s.in.Finish(io.EOF)
	c.mu.Lock()
	s.remoteDone = true
	c.mu.Unlock()
	c.maybeForget(s)
}

// finishLocal records that our FIN went out.
func (c *Conn) finishLocal(s *Stream) { c.maybeForget(s) }

// maybeForget drops s from the table once it is over both ways and its
// buffer is read: until then it holds budget, and must stay where
// resetFullest and the connection's end can reach it.
func (c *Conn) maybeForget(s *Stream) {
	c.wmu.Lock()
	local := s.localDone && !s.queued
	c.wmu.Unlock()
	if !local || s.in.Buffered() > 0 {
		return
	}
	c.mu.Lock()
	if s.remoteDone && c.streams[s.id] == s {
		delete(c.streams, s.id)
	}
	c.mu.Unlock()
}

// peerReset handles the peer's RST_STREAM.
func (c *Conn) peerReset(id uint32) {
	c.mu.Lock()
	s := c.streams[id]
	if s != nil {
		s.remoteDone = true
		delete(c.streams, id)
	}
	c.mu.Unlock()
	if s == nil {
		return
	}
	c.release(s.abort(errPeerReset))
	c.wmu.Lock()
	s.localDone, s.ended = true, true
	c.failPendingLocked(s, errPeerReset)
	c.wmu.Unlock()
}

// resetStream ends s from our side: RST_STREAM with status unless we had
// already sent FIN (then it only releases s locally, as spdystream does);
// with byUs, reads fail too (the peer's data is being refused). It
// reports whether it queued the RST_STREAM.
func (c *Conn) resetStream(s *Stream, status uint32, byUs bool) (sent bool) {
	_, sent = c.reset(s, status, byUs)
	return sent
}

// reset is resetStream, also reporting whether this reset ended s: false
// when s had been reset, by either side, or its connection ended first.
func (c *Conn) reset(s *Stream, status uint32, byUs bool) (first, sent bool) {
	var err error = fmt.Errorf("stream %d: %w", s.id, ErrReset)
	if byUs {
		err = fmt.Errorf("stream %d overran its buffer: %w", s.id, ErrReset)
	}
	// Abort first: once the stream is gone from the table its reads fail
	// and its bytes are no longer counted. DATA still arriving meanwhile
	// is discarded by the aborted buffer.
	n, first := s.abortFirst(err)
	c.release(n)
	c.mu.Lock()
	if c.streams[s.id] == s {
		delete(c.streams, s.id)
	}
	c.mu.Unlock()
	c.wmu.Lock()
	if !s.ended && !c.wclosed {
		// Also when a FIN is queued but not yet written: it is dropped
		// from the queue below, and the peer must see the stream end.
		c.pushControlLocked(appendRstStream(nil, s.id, status))
		sent = true
	}
	s.localDone, s.ended = true, true
	c.failPendingLocked(s, err)
	c.wmu.Unlock()
	return first, sent
}

// failPendingLocked ends a Write waiting on s; c.wmu is held. If the
// writer is sending part of it right now, the failure is reported after
// that write, so the caller never reuses a buffer the kernel still reads.
func (c *Conn) failPendingLocked(s *Stream, err error) {
	if !s.queued {
		return
	}
	s.queued = false
	for i, a := range c.active {
		if a == s {
			c.active = append(c.active[:i], c.active[i+1:]...)
			break
		}
	}
	if s.inflight {
		s.failErr = err
		return
	}
	s.pending = nil
	s.wdone <- err
}

func (c *Conn) queueControl(b []byte) {
	c.wmu.Lock()
	if !c.wclosed {
		c.pushControlLocked(b)
	}
	c.wmu.Unlock()
}

// pushControlLocked queues a control frame and wakes the writer; c.wmu is
// held. A peer that makes us queue more than maxQueuedControl bytes
// (pings or bad frames it never reads the answers to) loses the
// connection.
func (c *Conn) pushControlLocked(b []byte) {
	if c.ctrlSize+len(b) > maxQueuedControl {
		if !c.closing {
			c.closing = true
			c.overflow.Store(true)
			c.opts.OnLimit(LimitControlQueue)
			go c.goAway(goAwayInternalError)
		}
		return
	}
	c.ctrl = append(c.ctrl, b)
	c.ctrlSize += len(b)
	c.wakeWriter()
}

// wakeWriter signals the writer; c.wmu is held.
func (c *Conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// stopWriter fails everything still queued and stops the writer.
func (c *Conn) stopWriter(err error) {
	c.wmu.Lock()
	c.wclosed = true
	for len(c.active) > 0 {
		c.failPendingLocked(c.active[0], err)
	}
	c.ctrl, c.ctrlSize = nil, 0
	c.wakeWriter()
	c.wmu.Unlock()
}
