package server

import (
	"context"
	"fmt"
	"net/http"
)

// enter counts a request in for Drain, from before it is resolved or
// dialed until its handler returns, so a session still being set up when
// the drain starts is waited for (and drained as it registers). Once
// draining it lets in only a request that brings its own forwarded
// connection (servedWhileDraining). Call s.leave when it returns true and
// the request is over.
func (s *Server) enter(r *http.Request) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining && !servedWhileDraining(r) {
		return false
	}
	s.inflight.n++
	return true
}

// leave ends what enter (or runSession) counted in.
func (s *Server) leave() { s.inflight.add(&s.mu, -1) }

// AwaitAccepted returns once every connection the forwarding listener has
// accepted has brought its first request to the handler or closed, or
// ctx's error when it ends first. Call it after closing the listener: a
// daemon that stops listening calls it before the http.Server's
// Shutdown, which drops a request it reads after it began, unanswered. A
// connection that sends nothing is closed at the read-header timeout.
func (s *Server) AwaitAccepted(ctx context.Context) error {
	return s.fresh.awaitZero(ctx, &s.mu)
}

// servedWhileDraining reports whether r is served during a drain, when
// the listener no longer accepts: a request that carries its forwarded
// connection (connect-tcp, an HTTP/2 stream, a v4 WebSocket: each the
// client's one connection, done when that is), or an OPTIONS. Such a
// request came on a connection accepted before the listener closed (an
// upgrade takes its connection over; an HTTP/2 connection's streams stop
// at the GOAWAY of the shutdown), so the drain stays bounded. Refusing
// it failed a client that had only come a moment too early: when the
// next daemon takes the port over (--reuse-port), a client is never
// refused. A SPDY or tunnel session is refused: it would be drained on
// arrival, and end before its first stream.
func servedWhileDraining(r *http.Request) bool {
	switch {
	case r.Method == http.MethodOptions, r.ProtoMajor == 2, isConnectTCP(r.Header):
		return true
	case isWebSocket(r.Header):
		choice, err := negotiateWebSocket(r.Header)
		return err == nil && !choice.tunnel
	}
	return false
}

// MarkServing records that the forwarding listener is up; /readyz then
// answers 200 until Drain starts.
func (s *Server) MarkServing() {
	s.mu.Lock()
	s.serving = true
	s.mu.Unlock()
}

// Ready reports whether the server takes new sessions: true once the
// listener is up, false once the drain starts (when it still serves the
// requests servedWhileDraining lets in, on connections already accepted).
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serving && !s.draining
}

// isDraining reports whether Drain has begun, or the Shutdown of an
// http.Server from NewHTTPServer.
func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining || s.shutDown
}

// Sessions returns the number of sessions being served.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// DrainCutShortError is Drain's error when its context ended before the
// sessions did.
type DrainCutShortError struct {
	Sessions int   // sessions still open, which Drain then closed
	Err      error // the context's error
}

func (e *DrainCutShortError) Error() string {
	return fmt.Sprintf("drain: %d sessions still open: %v", e.Sessions, e.Err)
}

func (e *DrainCutShortError) Unwrap() error { return e.Err }

// Drain refuses new sessions and new streams, but the requests
// servedWhileDraining lets in; it waits for the requests and forwarded
// connections in flight to finish, and returns when none is left. When
// ctx is done first, the remaining sessions are closed at once; Drain
// then still waits for them to end and returns a *DrainCutShortError that
// wraps ctx's error. A request still being read from a connection
// accepted earlier may come in after Drain returned: call Drain again
// once the http.Server's Shutdown has returned, to wait for those too.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	sessions := make([]*sessionEntry, 0, len(s.sessions))
	for e := range s.sessions {
		sessions = append(sessions, e)
	}
	s.mu.Unlock()
	for _, e := range sessions {
		e.drain()
	}
	if err := s.inflight.awaitZero(ctx, &s.mu); err == nil {
		return nil
	}
	left := s.Sessions()
	s.cancel()
	s.inflight.awaitZero(context.Background(), &s.mu)
	return &DrainCutShortError{Sessions: left, Err: ctx.Err()}
}
