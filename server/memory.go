package server

import (
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// After a session ends, freed memory is handed back to the kernel within
// releaseIdle when no session is left, and within releaseBusy otherwise.
// The busy interval bounds the cost: each release is two forced GCs, so a
// daemon with thousands of sessions coming and going pays for at most one
// release every releaseBusy.
//
// A release also waits releaseSettle after the session end that asked for
// it: a session is counted as ended before its last goroutines have let go
// of its buffers, and a collection that runs too soon keeps them.
const (
	releaseIdle   = time.Second
	releaseBusy   = 5 * time.Second
	releaseSettle = 250 * time.Millisecond
)

// releaser schedules debug.FreeOSMemory calls: at most one pending, and
// none sooner than its interval after the previous one.
type releaser struct {
	mu      sync.Mutex
	pending *time.Timer
	due     time.Time
	last    time.Time
}

// releaseMemory hands the memory of finished sessions back to the kernel.
// A burst of bulk transfers leaves tens of MiB of freed buffers that the
// runtime would otherwise return only slowly, and a node daemon should
// shrink back when the transfers are over, even while other sessions (an
// idle shell's port-forward) stay open.
func (s *Server) releaseMemory(idle bool) {
	r := &s.rel
	r.mu.Lock()
	defer r.mu.Unlock()
	every := releaseBusy
	if idle {
		every = releaseIdle
	}
	due := r.last.Add(every)
	if soonest := time.Now().Add(releaseSettle); due.Before(soonest) {
		due = soonest
	}
	if r.pending != nil {
		if !due.Before(r.due) || !r.pending.Stop() {
			return // one is scheduled at least as soon, or is running
		}
	}
	r.due = due
	r.pending = time.AfterFunc(time.Until(due), func() {
		r.mu.Lock()
		r.pending, r.last = nil, time.Now()
		r.mu.Unlock()
		// Two collections: buffers in sync.Pools survive the first in
		// the pools' victim caches and are freed by the second.
		runtime.GC()
		debug.FreeOSMemory()
	})
}
