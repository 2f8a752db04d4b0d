package spdy

import (
	"sync"
	"sync/atomic"
)

// Budget is a byte budget shared by connections: the client data that all
// their streams together may hold unread. A connection's reader pauses
// while the budget is spent, as it does for its own ConnBuffer; the budget
// may be overshot by at most one read chunk per connection reading at that
// moment. Every holder of the budget (a Conn, or anything else taking from
// it, such as a v4 WebSocket session) joins it, so that a reader that has
// waited StallTimeout for it with nothing of its own to reset can reset
// the stale buffer (no byte put in or read for its holder's StallTimeout)
// holding the most, whichever holder it belongs to: one pod that stops
// reading must not stop every connection.
type Budget struct {
	limit int64
	used  atomic.Int64

	mu      sync.Mutex
	holders map[Holder]struct{} // everything sharing the budget
}

// A Holder takes bytes from a Budget into buffers of its own (a Conn's
// streams, a v4 WebSocket session's ports), any of which may go stale.
type Holder interface {
	// FullestStale returns the bytes held by the fullest of its buffers
	// into which nothing has been put, and from which nothing has been
	// read, for the holder's StallTimeout (a consumer whose write to its
	// pod progresses, though it has not returned, reads), and a
	// function that resets
	// that buffer unless it has been used since: its bytes leave the
	// budget and its forward ends, and the holder counts
	// LimitStreamBuffer; reset reports whether it did. FullestStale
	// returns 0 and nil when no buffer holding bytes is stale. Both may
	// be called on any goroutine.
	FullestStale() (held int, reset func() bool)
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

// Join adds h to the holders whose stale buffers Reclaim may reset. A
// nil budget ignores it.
func (b *Budget) Join(h Holder) {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.holders == nil {
		b.holders = map[Holder]struct{}{}
	}
	b.holders[h] = struct{}{}
	b.mu.Unlock()
}

// Leave removes h, which holds nothing any more.
func (b *Budget) Leave(h Holder) {
	if b == nil {
		return
	}
	b.mu.Lock()
	delete(b.holders, h)
	b.mu.Unlock()
}

// Reclaim resets the stale buffer holding the most bytes of any holder
// sharing b (see Holder). A reader calls it once it has waited its
// StallTimeout for the spent budget with nothing of its own to reset. It
// reports whether it reset one.
func (b *Budget) Reclaim() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	holders := make([]Holder, 0, len(b.holders))
	for h := range b.holders {
		holders = append(holders, h)
	}
	b.mu.Unlock()
	var victim func() bool
	most := 0
	for _, h := range holders {
		if n, reset := h.FullestStale(); reset != nil && n > most {
			victim, most = reset, n
		}
	}
	return victim != nil && victim()
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
	// nothing for StallTimeout while its StreamBuffer was full, or a
	// stale buffer (a stream, a v4 WebSocket port) was reset by
	// Budget.Reclaim.
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
