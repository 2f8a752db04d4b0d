package server

import (
	"runtime/debug"
	"sync"
	"time"
)

// releaseEvery bounds how often memory is handed back to the kernel.
const releaseEvery = time.Second

// releaser schedules debug.FreeOSMemory calls.
type releaser struct {
	mu      sync.Mutex
	pending *time.Timer
	last    time.Time
}

// releaseMemory hands the memory of finished sessions back to the kernel
// when the server has become idle (no session), at most once per
// releaseEvery: a burst of bulk transfers leaves tens of MiB of freed
// buffers that the runtime would otherwise return only slowly, and a node
// daemon should shrink back when it has nothing to do.
func (s *Server) releaseMemory() {
	r := &s.rel
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending != nil {
		return // one is scheduled already
	}
	r.pending = time.AfterFunc(max(0, releaseEvery-time.Since(r.last)), func() {
		r.mu.Lock()
		r.pending, r.last = nil, time.Now()
		r.mu.Unlock()
		s.mu.Lock()
		idle := len(s.sessions) == 0
		s.mu.Unlock()
		if idle {
			debug.FreeOSMemory()
		}
	})
}
