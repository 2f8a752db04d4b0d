package spdy

import (
	"sync"
	"sync/atomic"
	"time"
)

// Budget is a byte budget shared by connections: the client data that all
// their streams together may hold unread. A connection's reader pauses
// while the budget is spent, as it does for its own ConnBuffer; the budget
// may be overshot by at most one read chunk per connection reading at that
// moment. A reader that has waited StallTimeout for it with nothing of its
// own to reset resets the stale stream (no byte put in or read for its
// connection's StallTimeout) holding the most, on any connection sharing
// the budget: one pod that stops reading must not stop every connection.
type Budget struct {
	limit int64
	used  atomic.Int64

	mu    sync.Mutex
	conns map[*Conn]struct{} // the connections sharing the budget
}

// NewBudget returns a budget of limit bytes; limit ≤ 0 means unlimited.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// Used returns the bytes held now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Limit returns the budget's size in bytes (0: unlimited).
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// Add records n bytes more held (n < 0: fewer). A nil budget ignores it.
func (b *Budget) Add(n int64) {
	if b != nil {
		b.used.Add(n)
	}
}

// join adds c to the connections whose stale streams reclaim may reset.
func (b *Budget) join(c *Conn) {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.conns == nil {
		b.conns = map[*Conn]struct{}{}
	}
	b.conns[c] = struct{}{}
	b.mu.Unlock()
}

// leave removes c, whose connection has ended.
func (b *Budget) leave(c *Conn) {
	if b == nil {
		return
	}
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
}

// reclaim resets the stale stream holding the most bytes on any
// connection sharing b: one whose consumer has read nothing, and that has
// been given nothing, for its connection's StallTimeout. It reports
// whether it reset one.
func (b *Budget) reclaim() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	conns := make([]*Conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	now := time.Since(processStart)
	var victim *Stream
	most := 0
	for _, c := range conns {
		c.mu.Lock()
		for _, s := range c.streams {
			if now-time.Duration(s.lastUse.Load()) < c.opts.StallTimeout {
				continue
			}
			if n := s.in.Buffered(); n > most {
				victim, most = s, n
			}
		}
		c.mu.Unlock()
	}
	if victim == nil {
		return false
	}
	victim.c.opts.OnLimit(LimitStreamBuffer)
	victim.c.resetStream(victim, statusFlowControlError, true)
	return true
}

// Exhausted reports whether the bytes held reach the limit.
func (b *Budget) Exhausted() bool {
	return b != nil && b.limit > 0 && b.used.Load() >= b.limit
}

// Names of the limits reported to Options.OnLimit.
const (
	// LimitStreams: a SYN_STREAM was refused because MaxStreams streams
	// were open.
	LimitStreams = "streams_per_session"
	// LimitStreamBuffer: a stream was reset because its consumer read
	// nothing for StallTimeout while its StreamBuffer was full.
	LimitStreamBuffer = "stream_buffer"
	// LimitSessionBuffer: the reader paused because the connection's
	// streams held ConnBuffer bytes.
	LimitSessionBuffer = "session_buffer"
	// LimitGlobalBuffer: the reader paused because the shared Budget was
	// spent.
	LimitGlobalBuffer = "global_buffer"
	// LimitControlQueue: the connection was closed because the peer made
	// it queue more than maxQueuedControl bytes of control frames (pings,
	// resets) without reading them.
	LimitControlQueue = "control_queue"
)
