package streams

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/moby/spdystream"
	"github.com/moby/spdystream/spdy"
)

// SPDY parsing limits. Port-forward streams carry three short headers; the
// kubelet's peers never come close to these.
const (
	spdyMaxControlFrame = 64 << 10
	spdyMaxHeaderField  = 16 << 10
	spdyMaxHeaderCount  = 64
)

// SPDYOptions configure ServeSPDY.
type SPDYOptions struct {
	// IdleTimeout closes the connection after this long without a frame in
	// either direction (pings count). Zero means no idle timeout.
	IdleTimeout time.Duration
}

// ServeSPDY runs the server side of a SPDY/3.1 connection on c, which must
// already have been upgraded (the 101 response written). accept is called
// for every stream the client opens; a stream it accepts gets its
// SYN_REPLY at once. Pings are answered.
//
// The engine is moby/spdystream, the kubelet's. It has known limits that a
// later engine removes: its frame workers block on a stream whose reader is
// slow, and it does no flow control.
func ServeSPDY(c net.Conn, accept AcceptFunc, opts SPDYOptions) (Conn, error) {
	sc, err := spdystream.NewConnectionWithOptions(c, true,
		spdy.WithMaxControlFramePayloadSize(spdyMaxControlFrame),
		spdy.WithMaxHeaderFieldSize(spdyMaxHeaderField),
		spdy.WithMaxHeaderCount(spdyMaxHeaderCount),
	)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("spdy connection: %w", err)
	}
	conn := &spdyConn{raw: c, sc: sc, done: make(chan struct{})}
	if opts.IdleTimeout > 0 {
		sc.SetIdleTimeout(opts.IdleTimeout)
	}
	go conn.serve(accept)
	return conn, nil
}

type spdyConn struct {
	raw  net.Conn
	sc   *spdystream.Connection
	done chan struct{}
}

func (c *spdyConn) serve(accept AcceptFunc) {
	go func() {
		<-c.sc.CloseChan()
		close(c.done)
	}()
	c.sc.Serve(func(s *spdystream.Stream) {
		// This runs on a spdystream frame worker; accept must not block.
		st := &spdyStream{s: s, conn: c, replied: make(chan struct{})}
		if err := accept(st); err != nil {
			s.Reset()
			return
		}
		s.SendReply(http.Header{}, false)
		close(st.replied)
	})
}

func (c *spdyConn) Done() <-chan struct{} { return c.done }

// Close sends GOAWAY and closes the socket. spdystream then ends every
// stream: reads return and blocked frame workers are released. Streams the
// session still owns are reset by the session.
func (c *spdyConn) Close() error {
	c.sc.Close()
	return c.raw.Close()
}

// spdyStream adapts a spdystream stream to Stream. spdystream's Read gives
// io.EOF both after a FIN and after a reset; a reset also marks the stream
// finished in both directions, which a FIN does not while we still send,
// and that is how the two are told apart.
type spdyStream struct {
	s         *spdystream.Stream
	conn      *spdyConn
	localDone atomic.Bool   // we sent FIN or RST
	replied   chan struct{} // closed once SYN_REPLY is out
}

func (st *spdyStream) peerReset() bool {
	select {
	case <-st.conn.done:
		return true
	default:
	}
	return !st.localDone.Load() && st.s.IsFinished()
}

func (st *spdyStream) Read(p []byte) (int, error) {
	n, err := st.s.Read(p)
	if err == io.EOF && st.peerReset() {
		return n, fmt.Errorf("read stream %d: %w", st.ID(), ErrReset)
	}
	return n, err
}

func (st *spdyStream) Write(p []byte) (int, error) {
	if st.peerReset() {
		return 0, fmt.Errorf("write stream %d: %w", st.ID(), ErrReset)
	}
	n, err := st.s.Write(p)
	if err != nil {
		return n, fmt.Errorf("write stream %d: %w: %w", st.ID(), ErrReset, err)
	}
	return n, nil
}

func (st *spdyStream) CloseWrite() error {
	st.localDone.Store(true)
	return st.s.Close()
}

// Reset sends RST_STREAM unless this side already finished, and always
// releases the stream locally, so calling it after CloseWrite is a cheap
// way to drop a finished stream.
//
// A reset never overtakes the SYN_REPLY: a client that sees RST_STREAM
// before the reply fails stream creation instead of reading the error
// stream. (spdystream's writes already wait for the reply; its Reset does
// not.)
func (st *spdyStream) Reset() error {
	<-st.replied
	st.localDone.Store(true)
	return st.s.Reset()
}

func (st *spdyStream) Headers() http.Header { return st.s.Headers() }
func (st *spdyStream) ID() uint32           { return st.s.Identifier() }
