package spdy

import "sync/atomic"

// Budget is a byte budget shared by connections: the client data that all
// their streams together may hold unread. A connection's reader pauses
// while the budget is spent, as it does for its own ConnBuffer; the budget
// may be overshot by at most one read chunk per connection reading at that
// moment.
type Budget struct {
	limit int64
	used  atomic.Int64
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
