package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// h2ReplayMax bounds what a local client may send before the server
// answers its stream for the stream to be sent again: see h2Body.
const h2ReplayMax = 256 << 10

// h2Body is the request body of an HTTP/2 stream: what the local client
// sends, ending (END_STREAM) when it half-closes.
//
// Until the server answers the stream, it keeps what it has read, up to
// h2ReplayMax, so that the transport can send the request again, bytes
// and all, on a new connection when the server refused the stream
// without processing it: a GOAWAY naming a lower stream as the last it
// processed (a draining daemon's, crossing a new stream), or
// REFUSED_STREAM. The pod never saw a refused stream, so nothing reaches
// it twice. The transport asks for the body again through the request's
// GetBody (again); each call starts a new reader and ends the one before.
type h2Body struct {
	c *net.TCPConn

	// readMu is held across each read of c and the keeping of what it
	// read, so that kept is in c's order whichever reader read it.
	readMu sync.Mutex

	mu   sync.Mutex
	cur  *h2BodyReader // the reader the transport reads now
	kept []byte        // bytes read from c that cur has yet to return, or (while keep) all of them
	keep bool          // kept holds all that c sent: a new reader can start over
	sent int           // bytes read from c, for again's error
}

// newH2Body returns the body of c's stream, ready for its first reader.
func newH2Body(c *net.TCPConn) (*h2Body, *h2BodyReader) {
	b := &h2Body{c: c, keep: true}
	b.cur = &h2BodyReader{b: b}
	return b, b.cur
}

// again is the request's GetBody: a reader that returns what c sent so
// far, then goes on reading c. The reader before it reads no more.
func (b *h2Body) again() (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.keep {
		return nil, fmt.Errorf("the local client sent %d bytes before the server answered, more than the %d that can be sent again", b.sent, h2ReplayMax)
	}
	b.cur = &h2BodyReader{b: b}
	// End a read the reader before may be waiting in; the new reader
	// clears the deadline before it reads c itself.
	b.c.SetReadDeadline(time.Now())
	return b.cur, nil
}

// answered says that the server answered the stream: it will not be sent
// again, so what was kept for it is let go once returned.
func (b *h2Body) answered() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.keep = false
	b.cur.dropReturned()
}

// errBodyReplaced is what a reader returns once again has replaced it.
var errBodyReplaced = errors.New("the stream's body went to a new stream")

// h2BodyReader is one reading of an h2Body, for one attempt of the
// request.
type h2BodyReader struct {
	b       *h2Body
	off     int  // guarded by b.mu: how much of b.kept this reader returned
	reading bool // guarded by b.mu: it has cleared c's read deadline
	closed  bool // guarded by b.mu
}

// dropReturned lets kept go once r has returned all of it and no reader
// will start over. b.mu must be held.
func (r *h2BodyReader) dropReturned() {
	if b := r.b; !b.keep && r.off == len(b.kept) {
		b.kept, r.off = nil, 0
	}
}

// fromKept returns kept bytes r has not returned, or an error for a
// reader that is closed or replaced; ok is false when r should read c.
// b.mu must be held.
func (r *h2BodyReader) fromKept(p []byte) (n int, ok bool, err error) {
	b := r.b
	switch {
	case r.closed:
		return 0, true, net.ErrClosed
	case b.cur != r:
		return 0, true, errBodyReplaced
	case r.off < len(b.kept):
		n = copy(p, b.kept[r.off:])
		r.off += n
		r.dropReturned()
		return n, true, nil
	}
	return 0, false, nil
}

func (r *h2BodyReader) Read(p []byte) (int, error) {
	b := r.b
	b.mu.Lock()
	n, ok, err := r.fromKept(p)
	b.mu.Unlock()
	if ok {
		return n, err
	}
	b.readMu.Lock()
	defer b.readMu.Unlock()
	b.mu.Lock()
	// A reader before this one may have kept bytes while it waited.
	if n, ok, err := r.fromKept(p); ok {
		b.mu.Unlock()
		return n, err
	}
	if !r.reading {
		// again, or the Close of a reader before, set a deadline to end
		// that reader's read.
		r.reading = true
		b.c.SetReadDeadline(time.Time{})
	}
	b.mu.Unlock()

	n, err = b.c.Read(p)

	b.mu.Lock()
	defer b.mu.Unlock()
	b.sent += n
	switch {
	case b.cur != r:
		// Replaced while reading: the bytes belong to the new reader.
		b.kept = append(b.kept, p[:n]...)
	case !b.keep:
	case len(b.kept)+n > h2ReplayMax:
		b.keep = false
		b.kept, r.off = nil, 0
	default:
		b.kept = append(b.kept, p[:n]...)
		r.off = len(b.kept)
	}
	return n, err
}

// Close ends a Read waiting for the local client. The transport closes
// the body when the stream ends before it does (an error status, a broken
// connection, the response body closed once the pod is done) and then
// waits for that Read: without this, until the client sent or closed. A
// replaced reader's Close does nothing: its read was ended by again.
func (r *h2BodyReader) Close() error {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	r.closed = true
	if b.cur != r {
		return nil
	}
	return b.c.SetReadDeadline(time.Now())
}
