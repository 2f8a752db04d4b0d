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
	// again is when the last session end that the pending release comes
	// too soon for has settled (zero if none), and againIdle whether no
	// session was left then: the release schedules one more for it.
	again     time.Time
	againIdle bool
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
	r.scheduleLocked(idle, time.Now().Add(releaseSettle))
}

// scheduleLocked makes a release run no sooner than settled, and within
// the interval idle gives after the previous one; r.mu is held. A session
// end never puts off a pending release: one that runs before the end has
// settled is followed by another.
func (r *releaser) scheduleLocked(idle bool, settled time.Time) {
	every := releaseBusy
	if idle {
		every = releaseIdle
	}
	due := r.last.Add(every)
	if due.Before(settled) {
		due = settled
	}
	if r.pending != nil {
		switch {
		case r.due.Before(settled):
			// Pending or running, it comes too soon for this end.
			if settled.After(r.again) {
				r.again = settled
			}
			r.againIdle = idle
			return
		case !due.Before(r.due) || !r.pending.Stop():
			return // one is scheduled at least as soon
		}
	}
	r.due = due
	r.pending = time.AfterFunc(time.Until(due), r.release)
}

// release is a scheduled release.
func (r *releaser) release() {
	r.mu.Lock()
	r.pending, r.last = nil, time.Now()
	if again := r.again; !again.IsZero() {
		r.again = time.Time{}
		r.scheduleLocked(r.againIdle, again)
	}
	r.mu.Unlock()
	// Two collections: buffers in sync.Pools survive the first in the
	// pools' victim caches and are freed by the second.
	runtime.GC()
	debug.FreeOSMemory()
}
