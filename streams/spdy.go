package streams

import (
	"io"
	"net"
	"time"

	"github.com/portforwardd/portforwardd/streams/spdy"
)

// SPDYOptions configure ServeSPDY. Zero values mean the engine's defaults.
type SPDYOptions struct {
	// IdleTimeout closes the connection after this long without a frame in
	// either direction (pings count). Zero means no idle timeout.
	IdleTimeout time.Duration
	// StreamBuffer and ConnBuffer bound the client data held for streams
	// whose pods read slower than the client sends; StallTimeout is how
	// long a full stream may go without a read before it is reset. See
	// package spdy.
	StreamBuffer, ConnBuffer int
	StallTimeout             time.Duration
	// MaxStreams bounds the open streams of one connection.
	MaxStreams int
	// Reader, if set, is read instead of the connection, for bytes a
	// server had already buffered when it took the connection over.
	Reader io.Reader
	// Global, if set, bounds the client data held by all connections
	// sharing it (see NewBudget).
	Global *Budget
	// OnLimit, if set, is told each time a limit is hit (the Limit*
	// names); it must not block.
	OnLimit func(limit string)
	// OnRefuse, if set, is told of each stream the engine refuses
	// itself, never offering it to accept (see spdy.Options.OnRefuse):
	// Session.Refused counts it as a rejected one.
	OnRefuse func(id uint32, err error)
}

// Budget is a byte budget shared by SPDY connections and v4 WebSocket
// sessions (spdy.Budget).
type Budget = spdy.Budget

// NewBudget returns a shared budget of limit bytes; limit ≤ 0 means
// unlimited.
func NewBudget(limit int64) *Budget { return spdy.NewBudget(limit) }

// DefaultStallTimeout is how long a reader waits, with a buffer budget
// spent, before it resets a buffer nobody has moved for that long: a SPDY
// stream (SPDYOptions.StallTimeout) or a v4 WebSocket port
// (ChannelConfig.StallTimeout).
const DefaultStallTimeout = spdy.DefaultStallTimeout

// Names of the limits reported to OnLimit callbacks.
const (
	LimitStreams       = spdy.LimitStreams
	LimitStreamBuffer  = spdy.LimitStreamBuffer
	LimitSessionBuffer = spdy.LimitSessionBuffer
	LimitGlobalBuffer  = spdy.LimitGlobalBuffer
	LimitControlQueue  = spdy.LimitControlQueue
	// LimitPendingStreams: a stream was refused because MaxPendingPairs
	// pairs were waiting for their second stream.
	LimitPendingStreams = "pending_streams"
)

// ServeSPDY runs the server side of a SPDY/3.1 connection on c, which must
// already have been upgraded (the 101 response written). accept is called
// for every stream the client opens; a stream it accepts gets its
// SYN_REPLY at once, a stream it refuses an RST_STREAM. Pings are
// answered. The engine is package spdy.
func ServeSPDY(c net.Conn, accept AcceptFunc, opts SPDYOptions) Conn {
	return spdy.Serve(c, func(s *spdy.Stream) error { return accept(s) }, spdy.Options{
		IdleTimeout:  opts.IdleTimeout,
		StreamBuffer: opts.StreamBuffer,
		ConnBuffer:   opts.ConnBuffer,
		StallTimeout: opts.StallTimeout,
		MaxStreams:   opts.MaxStreams,
		Reader:       opts.Reader,
		Global:       opts.Global,
		OnLimit:      opts.OnLimit,
		OnRefuse:     opts.OnRefuse,
	})
}

var (
	_ Stream         = (*spdy.Stream)(nil)
	_ ProgressProbed = (*spdy.Stream)(nil)
	_ Conn           = (*spdy.Conn)(nil)
)
