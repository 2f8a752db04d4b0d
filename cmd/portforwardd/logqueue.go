package main

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// logQueueBytes bounds the log lines a logQueue holds for a reader that is
// behind: about five thousand lines of text or JSON.
const logQueueBytes = 1 << 20

// logStopGrace is how long the daemon's exit waits for a log reader that is
// behind to take the lines still queued.
const logStopGrace = 2 * time.Second

// logQueue is the daemon's stderr, behind log/slog. Write queues the line and
// returns at once, and one goroutine writes the queue out in order. slog's
// handlers write under a lock, so with stderr itself behind them, one write
// to a reader that stalled (journald stuck, a runtime's log pipe full)
// stopped every goroutine that logs: no session could start, since each
// logs "session started".
//
// The queue holds at most max bytes. A line that finds it full is dropped
// and counted, and so are the lines after it until the reader has taken
// half the queue; where the gap is, the line notice(n) formats says how
// many were lost. A line that cannot be written (a reader gone: EPIPE) is
// lost, as it would be by a synchronous write.
type logQueue struct {
	w      io.Writer
	max    int
	notice func(dropped uint64) []byte

	mu      sync.Mutex
	wake    *sync.Cond
	buf     []byte
	spare   []byte
	gap     uint64 // lines dropped since the queue last took one
	closing bool

	dropped atomic.Uint64 // lines dropped, ever
	done    chan struct{}
}

func newLogQueue(w io.Writer, max int, notice func(uint64) []byte) *logQueue {
	q := &logQueue{w: w, max: max, notice: notice, done: make(chan struct{})}
	q.wake = sync.NewCond(&q.mu)
	go q.run()
	return q
}

// Write queues a copy of p, one log line, or drops it when the queue is
// full or it is closed. It never blocks on the reader and never fails.
func (q *logQueue) Write(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	limit := q.max
	if q.gap > 0 {
		// Once dropping, go on until the reader has taken half the
		// queue, so a stall is one gap and one notice, not many.
		limit = q.max / 2
	}
	if q.closing || len(q.buf)+len(p) > limit {
		q.gap++
		q.dropped.Add(1)
		return len(p), nil
	}
	q.flushGap()
	q.buf = append(q.buf, p...)
	q.wake.Signal()
	return len(p), nil
}

// flushGap queues the notice of the lines dropped since the last one
// queued. The notice may take the queue past max, by one line.
func (q *logQueue) flushGap() {
	if q.gap == 0 {
		return
	}
	q.buf = append(q.buf, q.notice(q.gap)...)
	q.gap = 0
	q.wake.Signal()
}

// Dropped returns the lines dropped since the queue started.
func (q *logQueue) Dropped() uint64 { return q.dropped.Load() }

func (q *logQueue) run() {
	defer close(q.done)
	q.mu.Lock()
	for {
		for len(q.buf) == 0 && !q.closing {
			q.wake.Wait()
		}
		if len(q.buf) == 0 {
			q.mu.Unlock()
			return
		}
		out := q.buf
		q.buf, q.spare = q.spare[:0], nil
		q.mu.Unlock()
		// A reader gone (EPIPE) or a closed stderr loses the lines, as
		// a synchronous write would; there is nowhere to say so.
		q.w.Write(out)
		q.mu.Lock()
		// A gap whose next line has not come yet is said now, so the
		// last lines before a quiet spell are not the ones lost.
		q.flushGap()
		if cap(out) <= 64<<10 {
			q.spare = out // big batches go back to the heap
		}
	}
}

// Close writes out what is queued, waiting up to grace for a reader that
// is behind, and drops the lines written after it.
func (q *logQueue) Close(grace time.Duration) {
	q.mu.Lock()
	q.flushGap()
	q.closing = true
	q.wake.Signal()
	q.mu.Unlock()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-q.done:
	case <-t.C:
	}
}
