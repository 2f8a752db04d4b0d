package spdy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portforwardd/portforwardd/streams/internal/pipe"
)

// ErrReset is returned by a Stream's Read and Write once the peer reset
// the stream, the stream was reset locally, or the connection ended.
var ErrReset = errors.New("stream reset")

// ErrConnClosed wraps ErrReset: a Stream's Read and Write return it (or an
// error wrapping it) when the connection carrying the stream has ended,
// closed, broken or failing to write, rather than the stream being reset
// on its own.
var ErrConnClosed = fmt.Errorf("connection closed: %w", ErrReset)

// Stream is one client-initiated stream.
type Stream struct {
	c         *Conn
	id        uint32
	headers   http.Header
	in        *pipe.Pipe
	replied   chan struct{} // closed once SYN_REPLY is queued (or the stream refused)
	aborted   chan struct{} // closed once the stream is reset, either side, or its connection ends
	abortErr  error         // why; set before aborted is closed
	abortOnce sync.Once
	hooksMu   sync.Mutex
	hooks     []*func() // AfterAbort's, until the stream is aborted
	hooksRun  bool      // the stream was aborted: hooks ran
	// lastUse is when bytes were last put in or read (time since
	// processStart), for FullestStale.
	lastUse atomic.Int64

	// Guarded by c.wmu.
	pending   []byte     // data Write is waiting to have sent
	fin       bool       // a FIN goes out after pending
	queued    bool       // in c.active
	wdone     chan error // Write and CloseWrite wait here
	localDone bool       // FIN or RST sent (or queued): no more writes
	ended     bool       // the peer will see the stream end: our FIN written, an RST queued, or it reset
	unacked   int        // bytes consumed since the last WINDOW_UPDATE
	inflight  bool       // part of pending is in the batch being written
	batchOff  int        // how much of pending the current batch takes
	finSent   bool       // the current batch carries the FIN
	failErr   error      // a failure to report once the batch is written

	// Guarded by c.mu.
	remoteDone bool // FIN or RST received
}

// abort drops what the stream holds and makes its reads fail with err;
// Aborted is closed. It returns the bytes dropped.
func (s *Stream) abort(err error) int {
	n, _ := s.abortFirst(err)
	return n
}

// abortFirst is abort, also reporting whether this call ended the stream
// (no reset, by either side, nor the connection's end came first).
func (s *Stream) abortFirst(err error) (n int, first bool) {
	n = s.in.Abort(err)
	s.abortOnce.Do(func() {
		s.abortErr = err
		close(s.aborted)
		first = true
		s.hooksMu.Lock()
		hooks := s.hooks
		s.hooks, s.hooksRun = nil, true
		s.hooksMu.Unlock()
		for _, f := range hooks {
			go (*f)()
		}
	})
	return n, first
}

// AfterAbort arranges for f to be called in its own goroutine once the
// stream is aborted (see Aborted), at once if it already is: what a
// goroutine waiting on Aborted would do, with no goroutine while the
// stream lives. stop unregisters f, and reports whether that kept f from
// being called.
func (s *Stream) AfterAbort(f func()) (stop func() bool) {
	s.hooksMu.Lock()
	if s.hooksRun {
		s.hooksMu.Unlock()
		go f()
		return func() bool { return false }
	}
	h := &f
	s.hooks = append(s.hooks, h)
	s.hooksMu.Unlock()
	return func() bool {
		s.hooksMu.Lock()
		defer s.hooksMu.Unlock()
		for i, g := range s.hooks {
			if g == h {
				s.hooks = append(s.hooks[:i], s.hooks[i+1:]...)
				return true
			}
		}
		return false
	}
}

// Drained reports whether everything the peer sent has been read and no
// more will come (its FIN, or a reset, was received): a Read would return
// at once with io.EOF or the reset's error.
func (s *Stream) Drained() bool { return s.in.Drained() }

// Aborted is closed once the stream has been reset, by the peer or
// locally, or its connection has ended: nothing more will be read from it
// or written to it. A forward still setting up for it (dialing the pod)
// can give up.
func (s *Stream) Aborted() <-chan struct{} { return s.aborted }

// AbortErr says why the stream was aborted once Aborted is closed (nil
// before): an error wrapping ErrConnClosed when its connection ended, or
// one wrapping ErrReset when the stream alone was reset.
func (s *Stream) AbortErr() error {
	select {
	case <-s.aborted:
		return s.abortErr
	default:
		return nil
	}
}

// ID is the stream's identifier.
func (s *Stream) ID() uint32 { return s.id }

// Headers are the headers of the stream's SYN_STREAM.
func (s *Stream) Headers() http.Header { return s.headers }

// Read returns data the peer sent: io.EOF after its FIN, an error wrapping
// ErrReset after a reset or when the connection is gone.
func (s *Stream) Read(p []byte) (int, error) { return s.in.Read(p) }

// WriteChunkTo waits for data like Read and writes one contiguous run of
// it straight from the stream's buffer to w (no copy out first). It
// returns the bytes written, the error Read would return, and w's error.
func (s *Stream) WriteChunkTo(w io.Writer) (n int, rerr, werr error) { return s.in.WriteChunkTo(w) }

// SetProgressProbe registers the consumer's probe of its write of the
// stream's bytes (see pipe.SetProbe): probe reports whether that write,
// though it has not returned, has made progress since probe was last
// called. The stall checks ask it before they take the stream for one
// whose consumer reads nothing: a pod reading slowly leaves a write to
// its full socket waiting for longer than StallTimeout. nil removes it.
func (s *Stream) SetProgressProbe(probe func() bool) { s.in.SetProbe(probe) }

// progressed asks the consumer's probe whether it made progress though
// it read nothing; if it did, that counts as a read for the stall
// checks: the stream is in use, and a reader waiting for the
// connection's buffer waits StallTimeout more.
func (s *Stream) progressed() bool {
	if !s.in.Progressed() {
		return false
	}
	s.lastUse.Store(int64(time.Since(processStart)))
	select {
	case s.c.drained <- struct{}{}:
	default:
	}
	return true
}

// Write sends p as DATA frames of at most Options.MaxFrame bytes and
// returns once they are written to the connection. The writer takes the
// bytes straight from p.
func (s *Stream) Write(p []byte) (int, error) {
	if err := s.send(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseWrite sends FIN: the peer reads EOF.
func (s *Stream) CloseWrite() error { return s.send(nil, true) }

func (s *Stream) send(p []byte, fin bool) error {
	<-s.replied
	c := s.c
	c.wmu.Lock()
	if s.localDone || c.wclosed {
		err := ErrReset
		if c.wclosed {
			err = ErrConnClosed
		}
		c.wmu.Unlock()
		return fmt.Errorf("write stream %d: %w", s.id, err)
	}
	if len(p) == 0 && !fin {
		c.wmu.Unlock()
		return nil // no frame: an empty DATA frame would say nothing
	}
	if fin {
		s.localDone = true
	}
	if c.direct && !c.writing && len(c.ctrl) == 0 && len(c.active) == 0 && len(p) <= c.opts.MaxFrame {
		c.writing = true
		c.wmu.Unlock()
		if err := c.writeDirect(s, p, fin); err != nil {
			return fmt.Errorf("write stream %d: %w", s.id, err)
		}
		if fin {
			c.wmu.Lock()
			s.ended = true
			c.wmu.Unlock()
			c.finishLocal(s)
		}
		return nil
	}
	s.pending, s.fin = p, fin
	if !s.queued {
		s.queued = true
		c.active = append(c.active, s)
	}
	c.wakeWriter()
	c.wmu.Unlock()
	if err := <-s.wdone; err != nil {
		return fmt.Errorf("write stream %d: %w", s.id, err)
	}
	if fin {
		s.c.finishLocal(s)
	}
	return nil
}

// Reset sends RST_STREAM (CANCEL) unless this side already sent FIN, and
// in any case drops what is buffered and forgets the stream, so calling it
// after CloseWrite is how a finished stream is released. It never
// overtakes the stream's SYN_REPLY.
func (s *Stream) Reset() error {
	<-s.replied
	s.c.resetStream(s, statusCancel, false)
	return nil
}

// wmuLocalDone marks a refused stream as finished on our side.
func (s *Stream) wmuLocalDone() {
	s.c.wmu.Lock()
	s.localDone, s.ended = true, true
	s.c.wmu.Unlock()
}

// errPeerReset is what reads return after the peer's RST_STREAM.
var errPeerReset = fmt.Errorf("peer: %w", ErrReset)

var _ io.ReadWriter = (*Stream)(nil)
