package spdy

import (
	"io"
	"time"
)

// Buffer budgets and flow control: the client data held in streams'
// buffers, counted against the connection's budget and the shared one,
// given back to the peer's windows as it is read or dropped, and the
// reader's wait, and resets, when a budget is spent (see the package doc).

// account records n bytes more (n < 0: fewer) held in streams' buffers,
// in the connection's and the shared budget. Bytes released wake a reader
// waiting for the connection budget.
func (c *Conn) account(n int64) {
	c.buffered.Add(n)
	c.opts.Global.Add(n)
	if n < 0 {
		select {
		case c.drained <- struct{}{}:
		default:
		}
	}
}

// release gives back n bytes a stream held that nobody will read (a
// reset): to the budgets and to the peer's connection window.
func (c *Conn) release(n int) {
	c.account(-int64(n))
	c.credit(n)
}

// credit returns n bytes the peer sent to its connection window.
func (c *Conn) credit(n int) {
	if n <= 0 {
		return
	}
	c.wmu.Lock()
	c.creditLocked(n)
	c.wmu.Unlock()
}

// creditLocked returns n bytes to the peer's connection window: bytes a
// consumer read, a reset dropped, or the reader discarded on arrival. The
// WINDOW_UPDATE goes out every half budget, so a peer that honours flow
// control never waits on bytes the daemon no longer holds. c.wmu is held.
func (c *Conn) creditLocked(n int) {
	c.connUnacked += n
	if c.connUnacked >= c.opts.ConnBuffer/2 && !c.wclosed && !c.closing {
		c.pushControlLocked(appendWindowUpdate(nil, 0, uint32(c.connUnacked)))
		c.connUnacked = 0
	}
}

// consumed runs on the consumer's goroutine after it read n bytes: it frees
// budget and, every half budget, sends WINDOW_UPDATEs for the stream and
// the connection.
func (c *Conn) consumed(s *Stream, n int) {
	c.account(-int64(n))
	c.wmu.Lock()
	c.creditLocked(n)
	c.creditStreamLocked(s, n)
	c.wmu.Unlock()
	if s.in.Buffered() == 0 {
		c.maybeForget(s) // a finished stream leaves the table once read
	}
}

// passedOn runs on the reader's goroutine after it wrote n bytes of s
// straight to the stream's pod (readDirect): they count as read at once,
// for the stream's window (the connection's is credited with the rest of
// the frame) and for FullestStale.
func (c *Conn) passedOn(s *Stream, n int) {
	if n == 0 {
		return
	}
	s.lastUse.Store(int64(time.Since(processStart)))
	c.wmu.Lock()
	c.creditStreamLocked(s, n)
	c.wmu.Unlock()
}

// creditStreamLocked returns n bytes to the peer's window of s, with a
// WINDOW_UPDATE every half budget. c.wmu is held.
func (c *Conn) creditStreamLocked(s *Stream, n int) {
	s.unacked += n
	if s.unacked >= c.opts.StreamBuffer/2 && !c.wclosed {
		c.pushControlLocked(appendWindowUpdate(nil, s.id, uint32(s.unacked)))
		s.unacked = 0
	}
}

// waitConnBudget waits while all streams together hold ConnBuffer bytes,
// or the shared budget is spent; when nobody reads for StallTimeout, nor
// progresses by a stream's probe, the fullest stream of this connection
// is reset.
func (c *Conn) waitConnBudget() error {
	overConn := func() bool { return c.buffered.Load() >= int64(c.opts.ConnBuffer) }
	if !overConn() && !c.opts.Global.Exhausted() {
		return nil
	}
	if overConn() {
		c.opts.OnLimit(LimitSessionBuffer)
	} else {
		c.opts.OnLimit(LimitGlobalBuffer)
	}
	stall := time.NewTimer(c.opts.StallTimeout)
	defer stall.Stop()
	// Reads on other connections free the shared budget without telling
	// this one: while only that budget is spent, look again every few
	// milliseconds.
	var poll <-chan time.Time
	for {
		conn, global := overConn(), c.opts.Global.Exhausted()
		if !conn && !global {
			return nil
		}
		if !conn {
			poll = time.After(5 * time.Millisecond)
		}
		select {
		case <-c.drained:
			stall.Reset(c.opts.StallTimeout)
		case <-poll:
		case <-stall.C:
			if conn, global = overConn(), c.opts.Global.Exhausted(); !conn && !global {
				return nil // freed meanwhile: nobody needs resetting
			}
			if c.anyProgressed() {
				// A pod is taking bytes, slowly, though its write has
				// not returned: as a read would, that restarts the wait.
				stall.Reset(c.opts.StallTimeout)
				continue
			}
			if !c.resetFullest() {
				if conn {
					return &connError{status: goAwayInternalError, msg: "connection buffer accounting"}
				}
				// Nothing of ours is held: a stale buffer of another
				// holder (a SPDY stream, a v4 WebSocket port) holds
				// the shared budget.
				c.opts.Global.Reclaim()
			}
			stall.Reset(c.opts.StallTimeout)
		case <-c.shut:
			return io.EOF
		}
	}
}

// FullestStale returns the bytes held by the stream, of those holding any,
// that holds the most while nothing has been put in or read from it for
// StallTimeout, nor its consumer progressed by its probe, and a function
// resetting it with FLOW_CONTROL_ERROR (as one overrunning its buffer
// is), unless it has been used meanwhile; 0 and nil when no stream is
// stale. It makes Conn a Budget Holder.
func (c *Conn) FullestStale() (held int, reset func() bool) {
	idle := func(s *Stream) bool {
		return time.Since(processStart)-time.Duration(s.lastUse.Load()) >= c.opts.StallTimeout
	}
	var idles []*Stream
	c.mu.Lock()
	for _, s := range c.streams {
		if idle(s) && s.in.Buffered() > 0 {
			idles = append(idles, s)
		}
	}
	c.mu.Unlock()
	var victim *Stream
	for _, s := range idles {
		// A stream whose pod reads slowly, its write waiting, is not
		// stale: its probe counts that as a use.
		if n := s.in.Buffered(); n > held && !s.progressed() {
			victim, held = s, n
		}
	}
	if victim == nil {
		return 0, nil
	}
	return held, func() bool {
		if !idle(victim) {
			return false // read or fed since: it frees the budget itself
		}
		// Another reader may have found it stale too, or its peer reset
		// it meanwhile: only the reset that ends it counts.
		if first, _ := c.reset(victim, statusFlowControlError, true); !first {
			return false
		}
		c.opts.OnLimit(LimitStreamBuffer)
		return true
	}
}

// anyProgressed asks the consumers of the streams holding bytes whether
// they have made progress they have not read (see Stream.progressed).
func (c *Conn) anyProgressed() bool {
	c.mu.Lock()
	held := make([]*Stream, 0, len(c.streams))
	for _, s := range c.streams {
		if s.in.Buffered() > 0 {
			held = append(held, s)
		}
	}
	c.mu.Unlock()
	progressed := false
	for _, s := range held {
		// Every one is asked: an answer is for the time since the
		// probe was last asked, and a progress counts as the stream's
		// use.
		if s.progressed() {
			progressed = true
		}
	}
	return progressed
}

// resetFullest resets the stream holding the most unread bytes; false if
// no stream holds any.
func (c *Conn) resetFullest() bool {
	c.mu.Lock()
	var fullest *Stream
	for _, s := range c.streams {
		if fullest == nil || s.in.Buffered() > fullest.in.Buffered() {
			fullest = s
		}
	}
	c.mu.Unlock()
	if fullest == nil || fullest.in.Buffered() == 0 {
		return false
	}
	if first, _ := c.reset(fullest, statusFlowControlError, true); first {
		c.opts.OnLimit(LimitStreamBuffer) // not when a Reclaim or the peer reset it first
	}
	return true
}
