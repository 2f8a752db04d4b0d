package server

import (
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/portforwardd/portforwardd/streams"
)

// h2StallChunk is the most one write of an HTTP/2 stream's client→pod
// direction hands its pod's socket at once, so that a pod that reads
// slowly but steadily is seen to take bytes.
const h2StallChunk = 256 << 10

// A write that has not returned can still be making progress: the kernel
// wakes a writer waiting on a full socket only once a third of its send
// buffer (up to about 1.3 MiB) is free, which a pod reading 40 KiB/s
// takes over 30 s to free. So watch also looks at the bytes the pod's TCP
// acknowledged (TCP_INFO), which grow as soon as it reads and opens its
// window, and counts them as progress of the write.

// h2Stalls keeps, for one HTTP/2 connection or for the whole node, the
// streams whose pod is not taking what the client sent: a write to the
// pod under way, and since when it last made progress. Go's server returns
// the connection's window only for bytes a handler reads, so the unread
// bytes of such streams hold the connection's window
// (--session-buffer-bytes) as well as their own (--stream-buffer-bytes);
// once they may hold all of it, every stream of the connection waits. And
// each such stream holds up to its window in the daemon's memory, on as
// many connections as clients open; --buffer-bytes bounds those stalled
// StallTimeout (a burst of new ones may hold more until then), as it
// bounds SPDY's. Once the stalled streams may hold all of the connection's
// window, or of the node's budget, then, as the SPDY engine does when its
// reader waits for a buffer, the streams whose pods have taken nothing for
// longest, beyond StallTimeout, are reset, as many as it takes for those
// left to hold less than all of it: their bytes are dropped, and their
// shares come back.
type h2Stalls struct {
	limit int    // how many stalled streams may hold the whole window or budget
	hit   string // the limit_hits_total label of a reset
	why   string // the log line of a reset

	mu      sync.Mutex
	waiting map[*h2StallPod]*h2Wait
	ticking bool
}

// h2Wait is a write to a pod that h2Stalls watches.
type h2Wait struct {
	since time.Time // its last progress
	acked uint64    // the pod's TCP bytes_acked when watch last looked
}

// h2StallPod is a stream's pod connection whose writes its connection's
// and the node's h2Stalls watch.
type h2StallPod struct {
	streams.PodConn
	stalls [2]*h2Stalls
	reset  func(*h2Stalls) // the stall reset: closes the pod connection, which ends the pump
}

// ackedBytes returns how many bytes the pod's TCP connection has had
// acknowledged, false when that cannot be told.
func (c *h2StallPod) ackedBytes() (uint64, bool) { return streams.AckedBytes(c.PodConn) }

// NetConn lets the pump look at the pod's TCP connection.
func (c *h2StallPod) NetConn() net.Conn { return c.PodConn }

func (c *h2StallPod) Write(p []byte) (int, error) {
	n := 0
	defer c.taken()
	for len(p) > 0 {
		now := time.Now()
		for _, s := range c.stalls {
			s.waitFrom(c, now)
		}
		k, err := c.PodConn.Write(p[:min(len(p), h2StallChunk)])
		n += k
		p = p[k:]
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// taken records that c's write is over.
func (c *h2StallPod) taken() {
	for _, s := range c.stalls {
		s.taken(c)
	}
}

// newH2Stalls returns the h2Stalls of one connection (perConnection) or of
// the node, for limits l.
func newH2Stalls(l Limits, perConnection bool) *h2Stalls {
	if perConnection {
		return &h2Stalls{
			limit: max(1, l.SessionBufferBytes/l.StreamBufferBytes),
			hit:   streams.LimitStreamBuffer,
			why:   "stream reset: its pod took nothing for the stall timeout while stalled streams held the connection's window",
		}
	}
	return &h2Stalls{
		limit: max(1, int(l.BufferBytes/int64(l.StreamBufferBytes))),
		hit:   streams.LimitGlobalBuffer,
		why:   "stream reset: its pod took nothing for the stall timeout while stalled streams held the node's --buffer-bytes",
	}
}

// h2StallWatch wraps pc, the pod connection of an HTTP/2 stream of r, so
// that its stall counts in its connection's h2Stalls and the node's; pc as
// it is when r came through no Listener.
func (s *Server) h2StallWatch(r *http.Request, pc streams.PodConn, log *slog.Logger) streams.PodConn {
	t, ok := r.Context().Value(connKey{}).(*trackedConn)
	if !ok {
		return pc
	}
	c := &h2StallPod{PodConn: pc, stalls: [2]*h2Stalls{t.h2Stalls(), s.h2Stalls}}
	var once sync.Once // the connection's look and the node's may pick it alike
	c.reset = func(by *h2Stalls) {
		once.Do(func() { s.resetStalled(by, log, pc) })
	}
	return c
}

// resetStalled resets the stalled stream of pc, which by picked.
func (s *Server) resetStalled(by *h2Stalls, log *slog.Logger, pc streams.PodConn) {
	s.limitHit(by.hit)
	log.Info(by.why, "stall_timeout", h2StallTimeout.String())
	pc.Close()
}

// h2StallTimeout is how long a pod must have taken nothing before its
// stream can be reset for holding the connection's window or the node's
// budget: SPDY's.
const h2StallTimeout = streams.DefaultStallTimeout

// waitFrom records that c's write has waited since at (its last progress),
// and starts the look at its stalls if none runs.
func (s *h2Stalls) waitFrom(c *h2StallPod, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting == nil {
		s.waiting = map[*h2StallPod]*h2Wait{}
	}
	if w := s.waiting[c]; w != nil {
		w.since = at
	} else {
		s.waiting[c] = &h2Wait{since: at}
	}
	if !s.ticking {
		s.ticking = true
		go s.watch()
	}
}

// taken records that c's write is over.
func (s *h2Stalls) taken(c *h2StallPod) {
	s.mu.Lock()
	delete(s.waiting, c)
	s.mu.Unlock()
}

// watch looks at the waiting writes every second, for as long as there
// are any: when s.limit or more of them have waited h2StallTimeout, the
// ones that have waited longest are reset, all but s.limit-1 of them, so
// that the stalled streams left hold less than the whole window or
// budget. A write whose pod's TCP acknowledged more bytes since the last
// look has made progress.
func (s *h2Stalls) watch() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var stalled []*h2StallPod
	for now := range tick.C {
		s.mu.Lock()
		if len(s.waiting) == 0 {
			s.ticking = false
			s.mu.Unlock()
			return
		}
		stalled = stalled[:0]
		for c, w := range s.waiting {
			if acked, ok := c.ackedBytes(); ok && acked != w.acked {
				w.acked, w.since = acked, now
				continue
			}
			if now.Sub(w.since) >= h2StallTimeout {
				stalled = append(stalled, c)
			}
		}
		var reset []*h2StallPod
		if len(stalled) >= s.limit {
			slices.SortFunc(stalled, func(a, b *h2StallPod) int {
				return s.waiting[a].since.Compare(s.waiting[b].since)
			})
			reset = stalled[:len(stalled)-s.limit+1]
			for _, c := range reset {
				delete(s.waiting, c)
			}
		}
		s.mu.Unlock()
		for _, c := range reset {
			c.reset(s)
		}
	}
}
