package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync/atomic"
)

// Listener wraps ln for the forwarding listener: connections cut off by
// the header limits (a slow request, a header block too large) are
// counted, and with Config.TLS the connections are TLS. Serve the
// http.Server of NewHTTPServer on it.
func (s *Server) Listener(ln net.Listener) net.Listener {
	ln = &trackingListener{Listener: ln, s: s}
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	return ln
}

type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c, s: l.s}, nil
}

// trackedConn notices the ends net/http gives a request it never hands to
// the handler: the read deadline of ReadHeaderTimeout, and the 431 answer
// to a header block over MaxHeaderBytes.
type trackedConn struct {
	net.Conn
	s       *Server
	served  atomic.Bool // a request reached the handler
	counted atomic.Bool
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !c.served.Load() && errors.Is(err, os.ErrDeadlineExceeded) && c.counted.CompareAndSwap(false, true) {
		c.s.limitHit(limitReadHeaderTimeout)
	}
	return n, err
}

var status431 = []byte("HTTP/1.1 431 ")

func (c *trackedConn) Write(p []byte) (int, error) {
	if !c.served.Load() && bytes.HasPrefix(p, status431) && c.counted.CompareAndSwap(false, true) {
		c.s.limitHit(limitHeaderBytes)
	}
	return c.Conn.Write(p)
}

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
