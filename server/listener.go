package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Listener wraps ln for the forwarding listener: connections cut off by
// the header limits (a slow request, a header block too large) are
// counted, and with Config.TLS the connections are TLS. Serve the
// http.Server of NewHTTPServer on it.
func (s *Server) Listener(ln net.Listener) net.Listener {
	ln = &trackingListener{Listener: ln, s: s, short: newAcceptShortage(s.log, "--listen")}
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	return ln
}

type trackingListener struct {
	net.Listener
	s     *Server
	short *acceptShortage
}

// Accept also says, once per episode, when the daemon cannot accept for
// want of file descriptors or memory (acceptShortage).
func (l *trackingListener) Accept() (net.Conn, error) {
	// Counted from before the accept, so that AwaitAccepted, after the
	// listener closed, cannot miss a connection accepted a moment
	// before; the trackedConn uncounts it (leaveFresh).
	l.s.fresh.add(&l.s.mu, 1)
	c, err := l.Listener.Accept()
	if err != nil {
		l.s.fresh.add(&l.s.mu, -1)
		return nil, l.short.failed(err)
	}
	return &trackedConn{Conn: c, s: l.s}, nil
}

func (l *trackingListener) Close() error {
	l.short.close()
	return l.Listener.Close()
}

// trackedConn notices the ends net/http gives a request it never hands to
// the handler: the read deadline of ReadHeaderTimeout, and the 431 answer
// to a header block over MaxHeaderBytes, on the first request of a
// connection and on each one that follows a kept-alive answer.
//
// It also buffers the reads of cleartext HTTP/2 connections: Go's HTTP/2
// server reads each frame header and payload straight from the
// connection, and a downloading client sends a WINDOW_UPDATE pair for
// every few KiB it reads, which would cost two read(2) calls per frame.
// Such a connection is recognised by its preface; it is never hijacked,
// so bytes held in the buffer cannot be stranded.
type trackedConn struct {
	net.Conn
	s       *Server
	served  atomic.Bool // a request reached the handler since the connection was last idle
	counted atomic.Bool

	// Used by the reading goroutine only (net/http reads a connection
	// from one goroutine at a time).
	head    []byte        // the first bytes, until h2c is decided
	decided bool          // whether the connection is h2c is known
	br      *bufio.Reader // reads of an h2c connection, after its preface

	stallsOnce sync.Once
	stalls     *h2Stalls // the HTTP/2 streams whose pods take nothing

	h2c atomic.Bool // it began with the h2c preface

	idleMu     sync.Mutex
	idleTimer  *time.Timer // closes it once idle for the idle timeout
	idleUntil  time.Time   // when idleTimer is due, as last armed
	idle       bool        // no request or stream in progress
	seenActive bool        // net/http has said StateActive once
	goneAway   bool        // h2c: our GOAWAY is sent or due, the close follows
	gone       bool        // closed or hijacked: never idle again

	// wmu makes each of net/http's writes to an h2c connection, and our
	// GOAWAY, one at a time; frames tells where net/http's frames end
	// in what it has written, and goAwayDue asks its next write that
	// ends between two frames to send our GOAWAY after it (closeIdle).
	wmu       sync.Mutex
	frames    frameEnds
	goAwayDue bool

	notFresh atomic.Bool // uncounted from Server.fresh
}

// leaveFresh uncounts the connection from the ones AwaitAccepted waits
// for, once: its first request has reached the handler (net/http drops
// one it reads after Shutdown began, and says StateActive before it
// looks), it has closed or gone idle after an answer, or, HTTP/2, its
// first stream has opened (the shutdown's GOAWAY refuses a stream it has
// not read, and a client whose request body is a forwarded connection
// cannot retry it elsewhere).
func (c *trackedConn) leaveFresh() {
	if c.notFresh.CompareAndSwap(false, true) {
		c.s.fresh.add(&c.s.mu, -1)
	}
}

// connState is the forwarding listener's ConnState: it closes a
// connection once it has been idle for the idle timeout, a keep-alive
// HTTP/1.1 connection waiting for its next request or an HTTP/2 one with
// no stream open, in place of http.Server's IdleTimeout. With IdleTimeout
// set, Go's HTTP/2 server re-arms the idle timer of a connection that
// is gone as it closes the streams left open on it, and the timer then
// keeps the whole connection (its frame read buffer of up to 1 MiB, the
// streams' queued writes with the daemon's copy buffers in them) for the
// idle timeout: a client dropping connections with streams open made the
// daemon hold megabytes per connection, counted by no session or limit,
// for 90 s. An idle h2c connection is told first (closeIdle).
func (s *Server) connState(c net.Conn, st http.ConnState) {
	nc := c
	if tc, ok := c.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	t, ok := nc.(*trackedConn)
	if !ok {
		return
	}
	t.idleMu.Lock()
	defer t.idleMu.Unlock()
	switch {
	case st == http.StateHijacked, st == http.StateClosed:
		t.leaveFresh()
	case st == http.StateIdle && !isHTTP2(c, t):
		// An HTTP/1.1 request answered by net/http itself (OPTIONS *).
		t.leaveFresh()
	case st == http.StateActive && t.seenActive && isHTTP2(c, t):
		// An HTTP/2 connection's first stream has opened; its preface
		// (the first StateActive, then StateIdle) is not a request, and
		// the shutdown's GOAWAY refuses every stream not yet read.
		t.leaveFresh()
	}
	idle := false
	switch st {
	case http.StateIdle:
		idle = true
		if !isHTTP2(c, t) {
			// A kept-alive HTTP/1.1 connection waits for its next
			// request, whose header limits net/http enforces without
			// the handler as it did the first's: count them again.
			// (HTTP/2's are framed where they cannot be told.)
			t.served.Store(false)
		}
	case http.StateActive:
		// An HTTP/2 connection is active first once its preface has
		// come, with no stream open yet; then whenever its first stream
		// opens, and idle when its last one ends.
		idle = !t.seenActive && isHTTP2(c, t)
		t.seenActive = true
	case http.StateHijacked, http.StateClosed:
		t.gone = true
	}
	t.idle = idle && !t.gone
	if !t.idle {
		if t.idleTimer != nil {
			t.idleTimer.Stop()
		}
		return
	}
	wait := s.idleConnTimeout()
	if t.goneAway {
		// The client was told to open no more streams: the streams that
		// crossed our GOAWAY have ended.
		wait = goAwayGrace
	}
	t.idleUntil = time.Now().Add(wait)
	if t.idleTimer == nil {
		t.idleTimer = time.AfterFunc(wait, func() { t.closeIdle() })
		return
	}
	t.idleTimer.Reset(wait)
}

// goAwayGrace is how long an idle HTTP/2 connection stays open after our
// GOAWAY, for a stream the client opened before the GOAWAY reached it:
// Go's server waits as long after its own GOAWAY (its goAwayTimeout, one
// round trip and then some).
const goAwayGrace = time.Second

// goAwayFrame is an HTTP/2 GOAWAY (RFC 9113 §6.8) with NO_ERROR and the
// last stream identifier 2^31-1, the first of a graceful shutdown: open
// no more streams; any you have opened will be served.
var goAwayFrame = []byte{
	0, 0, 8, // length
	0x7,        // type GOAWAY
	0,          // flags
	0, 0, 0, 0, // stream 0
	0x7f, 0xff, 0xff, 0xff, // last stream identifier
	0, 0, 0, 0, // NO_ERROR
}

// closeIdle closes the connection once it has been idle for the idle
// timeout. A cleartext HTTP/2 connection is sent a GOAWAY first and
// closed goAwayGrace later if it is idle still: a client that opens a
// stream as the connection closes under it (Go's transport cannot resend
// a stream whose body it has begun to send) would lose that forwarded
// connection, while one that has the GOAWAY opens its next stream on a
// new connection. Go's server, which does not know of our GOAWAY, serves
// the streams that cross it.
//
// The GOAWAY must go between two of net/http's frames, which it goes on
// writing while no stream is open (a PING's ack, a SETTINGS ack): its
// HTTP/2 server writes through a 4 KiB buffer, and a frame that does not
// fit goes out in two writes, the rest of it a moment after. So it is
// written only where the frames net/http has written end (Write follows
// them), now or after the write of net/http's that completes its frame.
// Over TLS the frames cannot be seen (net/http writes them to the
// tls.Conn, whose records are all this connection sees), and the
// connection just closes, as does one in a drain, where Go's server has
// sent its own GOAWAY, whose last stream identifier ours must not raise
// (goAwayNow).
func (c *trackedConn) closeIdle() {
	c.idleMu.Lock()
	defer c.idleMu.Unlock()
	if c.gone || !c.idle {
		return
	}
	if wait := time.Until(c.idleUntil); wait > 0 {
		c.idleTimer.Reset(wait) // active and idle again since it fired
		return
	}
	if !c.goneAway && c.h2c.Load() && !c.s.isDraining() {
		c.goneAway = true
		c.Conn.SetWriteDeadline(time.Now().Add(goAwayGrace))
		c.wmu.Lock()
		var err error
		switch {
		case c.goAwayNow():
			_, err = c.Conn.Write(goAwayFrame)
		case !c.frames.goAway:
			c.goAwayDue = true
		}
		c.wmu.Unlock()
		if err == nil {
			c.Conn.SetWriteDeadline(time.Time{})
			c.idleUntil = time.Now().Add(goAwayGrace)
			c.idleTimer.Reset(goAwayGrace)
			return
		}
	}
	c.Conn.Close()
}

// frameEnds follows the HTTP/2 frames in the bytes written to a
// connection, to tell whether they end between two frames.
type frameEnds struct {
	head   [9]byte // the frame header being read
	n      int     // its bytes written so far
	left   int     // the bytes of the frame's payload not written yet
	goAway bool    // one of them was a GOAWAY
}

func (f *frameEnds) wrote(p []byte) {
	for len(p) > 0 {
		if f.left > 0 {
			k := min(f.left, len(p))
			f.left -= k
			p = p[k:]
			continue
		}
		k := copy(f.head[f.n:], p)
		f.n += k
		p = p[k:]
		if f.n == len(f.head) {
			f.n, f.left = 0, int(f.head[0])<<16|int(f.head[1])<<8|int(f.head[2])
			f.goAway = f.goAway || f.head[3] == 0x7
		}
	}
}

func (f *frameEnds) between() bool { return f.n == 0 && f.left == 0 }

// goAwayNow reports whether our GOAWAY may go now: between two frames,
// and net/http has sent no GOAWAY of its own (a shutdown's, whose
// RegisterOnShutdown hooks run in no order), whose last stream
// identifier ours must not raise.
func (c *trackedConn) goAwayNow() bool { return c.frames.between() && !c.frames.goAway }

// isHTTP2 reports whether c, the connection under net/http, is HTTP/2.
func isHTTP2(c net.Conn, t *trackedConn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.ConnectionState().NegotiatedProtocol == "h2"
	}
	return t.h2c.Load()
}

// h2Stalls returns the connection's h2Stalls, made on first use.
func (c *trackedConn) h2Stalls() *h2Stalls {
	c.stallsOnce.Do(func() { c.stalls = newH2Stalls(c.s.cfg.Limits, true) })
	return c.stalls
}

// h2cPreface starts every cleartext HTTP/2 connection with prior
// knowledge; net/http reads exactly these bytes first to decide.
const h2cPreface = "PRI * HTTP/2.0"

// h2cReadBuffer is the read buffer of an h2c connection.
const h2cReadBuffer = 32 << 10

func (c *trackedConn) Read(p []byte) (int, error) {
	if c.br != nil {
		return c.br.Read(p)
	}
	n, err := c.Conn.Read(p)
	if err != nil && !c.served.Load() && errors.Is(err, os.ErrDeadlineExceeded) && c.counted.CompareAndSwap(false, true) {
		c.s.limitHit(limitReadHeaderTimeout)
	}
	if !c.decided && n > 0 {
		c.head = append(c.head, p[:min(n, len(h2cPreface)-len(c.head))]...)
		switch {
		case !bytes.HasPrefix([]byte(h2cPreface), c.head):
			c.decided, c.head = true, nil
		case len(c.head) == len(h2cPreface) && n <= len(h2cPreface):
			// net/http read the preface's first bytes exactly (it limits
			// that read), so nothing past them is in p: buffer from here.
			c.decided, c.head = true, nil
			c.h2c.Store(true)
			c.br = bufio.NewReaderSize(c.Conn, h2cReadBuffer)
		case len(c.head) == len(h2cPreface):
			c.decided, c.head = true, nil // more than the preface came at once: leave it unbuffered
			c.h2c.Store(true)
		}
	}
	return n, err
}

var status431 = []byte("HTTP/1.1 431 ")

func (c *trackedConn) Write(p []byte) (int, error) {
	if !c.served.Load() && bytes.HasPrefix(p, status431) && c.counted.CompareAndSwap(false, true) {
		c.s.limitHit(limitHeaderBytes)
	}
	if c.h2c.Load() {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		n, err := c.Conn.Write(p)
		c.frames.wrote(p[:n])
		if c.goAwayDue && err == nil && c.goAwayNow() {
			c.goAwayDue = false
			c.Conn.Write(goAwayFrame) // a failure is the next write's
		}
		return n, err
	}
	return c.Conn.Write(p)
}

// NetConn returns the connection under c, as tls.Conn's NetConn does, so
// that a session can look at the TCP connection of an upgraded one.
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

type connKey struct{}

// connContext is the http.Server's ConnContext: it lets the handler mark
// its connection as served.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if t, ok := c.(*trackedConn); ok {
		return context.WithValue(ctx, connKey{}, t)
	}
	return ctx
}

func markServed(ctx context.Context) {
	if t, ok := ctx.Value(connKey{}).(*trackedConn); ok {
		t.served.Store(true)
		t.leaveFresh()
	}
}

// unwrapConn returns the connection under a trackedConn, so that a
// hijacked TCP connection is a *net.TCPConn again (splice, vectored
// writes).
func unwrapConn(c net.Conn) net.Conn {
	if t, ok := c.(*trackedConn); ok {
		return t.Conn
	}
	return c
}
