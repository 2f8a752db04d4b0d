package streams

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/portforwardd/portforwardd/streams/spdy"
)

var (
	// ErrReset is returned by Stream reads and writes after the peer reset
	// the stream or the connection carrying it ended.
	ErrReset = spdy.ErrReset
	// ErrConnClosed wraps ErrReset: Stream reads and writes return it when
	// the connection carrying the stream ended (broke, or failed to
	// write), not the stream alone; the pump then counts its forward as
	// aborted.
	ErrConnClosed = spdy.ErrConnClosed
	// ErrDraining rejects streams that arrive while a session shuts down.
	ErrDraining = errors.New("session is shutting down")
	// ErrTooManyPending rejects a stream that would start a new pair while
	// MaxPendingPairs pairs wait for their second stream.
	ErrTooManyPending = errors.New("too many streams waiting for their pair")
)

// Stream is one stream of a multiplexed connection, seen by the server.
type Stream interface {
	// Read returns io.EOF after the peer half-closed the stream and an
	// error wrapping ErrReset after the peer reset it.
	io.Reader
	// Write sends p as stream data in one piece.
	io.Writer
	// CloseWrite half-closes the stream: the peer reads EOF.
	CloseWrite() error
	// Reset aborts both directions; unsent and unread data is dropped.
	Reset() error
	// Headers are the headers the peer opened the stream with.
	Headers() http.Header
	// ID is the stream's identifier on its connection.
	ID() uint32
}

// AcceptFunc is called by an engine for every stream the peer opens,
// before the engine replies to it. It must not block. A non-nil error
// rejects the stream: the engine resets it.
type AcceptFunc func(Stream) error

// Conn is the server side of one upgraded multiplexed connection.
type Conn interface {
	// Done is closed when the connection has ended: closed by the peer,
	// idle for too long, or broken.
	Done() <-chan struct{}
	// Close resets every open stream and closes the connection.
	Close() error
}

func errAssigned(requestID, streamType string) error {
	return fmt.Errorf("error processing stream for request %s: %s stream already assigned", requestID, streamType)
}
