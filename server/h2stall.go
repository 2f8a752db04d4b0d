package server

import (
	"log/slog"
	"net"
	"net/http"
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

// h2Stalls keeps, for one HTTP/2 connection, the streams whose pod is not
// taking what the client sent: a write to the pod under way, and since
// when it last made progress. Go's server returns the connection's window
// only for bytes a handler reads, so the unread bytes of such streams hold
// the connection's window (--session-buffer-bytes) as well as their own
// (--stream-buffer-bytes); once they may hold all of it, every stream of
// the connection waits. Then, as the SPDY engine does when its reader
// waits for the connection's buffer, the stream whose pod has taken
// nothing for longest, beyond StallTimeout, is reset: its bytes are
// dropped, and its share of the window comes back.
type h2Stalls struct {
	mu      sync.Mutex
	waiting map[*h2StallPod]time.Time
	ticking bool
}

// h2StallPod is a stream's pod connection whose writes h2Stalls watches.
type h2StallPod struct {
	streams.PodConn
	stalls *h2Stalls
	limit  int    // how many stalled streams may hold the connection's whole window
	reset  func() // the stall reset: closes the pod connection, which ends the pump
	acked  uint64 // the pod's TCP bytes_acked when watch last looked; stalls.mu
}

// ackedBytes returns how many bytes the pod's TCP connection has had
// acknowledged, false when that cannot be told.
func (c *h2StallPod) ackedBytes() (uint64, bool) { return streams.AckedBytes(c.PodConn) }

// NetConn lets the pump look at the pod's TCP connection.
func (c *h2StallPod) NetConn() net.Conn { return c.PodConn }

func (c *h2StallPod) Write(p []byte) (int, error) {
	n := 0
	defer c.stalls.taken(c)
	for len(p) > 0 {
		c.stalls.waitFrom(c, time.Now())
		k, err := c.PodConn.Write(p[:min(len(p), h2StallChunk)])
		n += k
		p = p[k:]
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// h2StallWatch wraps pc, the pod connection of an HTTP/2 stream of r, so
// that its stall counts in its connection's h2Stalls; pc as it is when r
// came through no Listener.
func (s *Server) h2StallWatch(r *http.Request, pc streams.PodConn, log *slog.Logger) streams.PodConn {
	t, ok := r.Context().Value(connKey{}).(*trackedConn)
	if !ok {
		return pc
	}
	l := s.cfg.Limits
	c := &h2StallPod{PodConn: pc, stalls: &t.h2Stalls, limit: max(1, l.SessionBufferBytes/l.StreamBufferBytes)}
	c.reset = func() {
		s.limitHit(streams.LimitStreamBuffer)
		log.Info("stream reset: its pod took nothing for the stall timeout while stalled streams held the connection's window",
			"stall_timeout", h2StallTimeout.String())
		pc.Close()
	}
	return c
}

// h2StallTimeout is how long a pod must have taken nothing before its
// stream can be reset for holding the connection's window: SPDY's.
const h2StallTimeout = streams.DefaultStallTimeout

// waitFrom records that c's write has waited since at (its last progress),
// and starts the connection's look at its stalls if none runs.
func (s *h2Stalls) waitFrom(c *h2StallPod, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting == nil {
		s.waiting = map[*h2StallPod]time.Time{}
	}
	s.waiting[c] = at
	if !s.ticking {
		s.ticking = true
		go s.watch(c.limit)
	}
}

// taken records that c's write is over.
func (s *h2Stalls) taken(c *h2StallPod) {
	s.mu.Lock()
	delete(s.waiting, c)
	s.mu.Unlock()
}

// watch looks at the connection's waiting writes every second, for as
// long as there are any: when limit or more of them have waited
// h2StallTimeout, the one that has waited longest is reset. A write
// whose pod's TCP acknowledged more bytes since the last look has made
// progress.
func (s *h2Stalls) watch(limit int) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for now := range tick.C {
		s.mu.Lock()
		if len(s.waiting) == 0 {
			s.ticking = false
			s.mu.Unlock()
			return
		}
		var oldest *h2StallPod
		var since time.Time
		stalled := 0
		for c, at := range s.waiting {
			if acked, ok := c.ackedBytes(); ok && acked != c.acked {
				c.acked = acked
				s.waiting[c] = now
				continue
			}
			if now.Sub(at) < h2StallTimeout {
				continue
			}
			stalled++
			if oldest == nil || at.Before(since) {
				oldest, since = c, at
			}
		}
		if stalled < limit {
			oldest = nil
		} else {
			delete(s.waiting, oldest)
		}
		s.mu.Unlock()
		if oldest != nil {
			oldest.reset()
		}
	}
}
