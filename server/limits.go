package server

import (
	"fmt"
	"net/http"

	"github.com/portforwardd/portforwardd/streams"
)

// Limits bound what clients may make the server hold. Zero fields mean
// the defaults named; every limit hit is counted in
// portforwardd_limit_hits_total{limit} and refused to that client only.
type Limits struct {
	// MaxSessions bounds the sessions served at once: upgraded
	// connections, plus each HTTP/2 stream. Default 4096.
	MaxSessions int
	// MaxStreamsPerSession bounds the open SPDY streams of one connection
	// (two per forwarded connection) and the concurrent streams of one
	// HTTP/2 connection. Default 2048.
	MaxStreamsPerSession int
	// MaxPendingStreams bounds the stream pairs of one session waiting for
	// their second stream. Default 1024.
	MaxPendingStreams int
	// StreamBufferBytes is what one stream may hold unread (client data
	// its pod has not taken yet); SessionBufferBytes is what all streams
	// of one connection may; BufferBytes is what all connections may.
	// Defaults 8 MiB, 64 MiB, 512 MiB.
	StreamBufferBytes, SessionBufferBytes int
	BufferBytes                           int64
	// MaxHeaderBytes bounds a request's header block. Default 64 KiB.
	MaxHeaderBytes int
}

// Limit defaults.
const (
	DefaultMaxSessions          = 4096
	DefaultMaxStreamsPerSession = 2048
	DefaultMaxPendingStreams    = streams.DefaultMaxPendingPairs
	DefaultStreamBufferBytes    = 8 << 20
	DefaultSessionBufferBytes   = 64 << 20
	DefaultBufferBytes          = 512 << 20
	DefaultMaxHeaderBytes       = 64 << 10
)

func (l *Limits) defaults() {
	set := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	set(&l.MaxSessions, DefaultMaxSessions)
	set(&l.MaxStreamsPerSession, DefaultMaxStreamsPerSession)
	set(&l.MaxPendingStreams, DefaultMaxPendingStreams)
	set(&l.StreamBufferBytes, DefaultStreamBufferBytes)
	set(&l.SessionBufferBytes, DefaultSessionBufferBytes)
	set(&l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	if l.BufferBytes <= 0 {
		l.BufferBytes = DefaultBufferBytes
	}
}

// Names of the limits in portforwardd_limit_hits_total and
// portforwardd_limit, beyond the engine's (streams.Limit*).
const (
	limitSessions          = "sessions"
	limitHeaderBytes       = "header_bytes"
	limitReadHeaderTimeout = "read_header_timeout"
)

// acquireSession takes a session slot; false (and the answer written) when
// MaxSessions are being served.
func (s *Server) acquireSession(w http.ResponseWriter, r *http.Request) bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
		s.limitHit(limitSessions)
		s.fail(w, r, &requestError{status: http.StatusServiceUnavailable, reason: "limit_sessions",
			msg:    fmt.Sprintf("too many port-forward sessions on this node (limit %d); try again later", s.cfg.Limits.MaxSessions),
			header: http.Header{"Retry-After": {"1"}}})
		return false
	}
}

func (s *Server) releaseSession() { <-s.slots }

func (s *Server) limitHit(limit string) { s.m.limitHits.WithLabelValues(limit).Inc() }
