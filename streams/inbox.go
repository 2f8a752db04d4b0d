package streams

import (
	"io"
	"sync"
)

// inbox is a bounded byte pipe between a connection's reader goroutine and
// one stream's consumer. put blocks while the inbox is full, so a consumer
// that does not read stalls the reader only after max bytes are queued;
// once the consumer side is closed, put discards instead of blocking.
type inbox struct {
	mu     sync.Mutex
	cond   sync.Cond
	buf    []byte // ring, allocated on first put
	start  int
	n      int
	max    int
	err    error // what reads return once the buffer is empty
	closed bool  // no more puts are kept
}

func newInbox(max int) *inbox {
	b := &inbox{max: max}
	b.cond.L = &b.mu
	return b
}

// put appends p, waiting for room as needed.
func (b *inbox) put(p []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf == nil && !b.closed {
		b.buf = make([]byte, b.max)
	}
	for len(p) > 0 {
		for b.n == b.max && !b.closed {
			b.cond.Wait()
		}
		if b.closed {
			return
		}
		end := (b.start + b.n) % b.max
		room := b.max - b.n
		if end+room > b.max {
			room = b.max - end
		}
		c := copy(b.buf[end:end+room], p)
		b.n += c
		p = p[c:]
		b.cond.Broadcast()
	}
}

// Read returns queued bytes, waiting for some; after close it drains the
// queue and then returns the close error.
func (b *inbox) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.n == 0 && b.err == nil {
		b.cond.Wait()
	}
	if b.n == 0 {
		return 0, b.err
	}
	end := b.start + b.n
	if end > b.max {
		end = b.max
	}
	c := copy(p, b.buf[b.start:end])
	b.start = (b.start + c) % b.max
	b.n -= c
	b.cond.Broadcast()
	return c, nil
}

// finish makes reads return err (io.EOF for an orderly end) once the queue
// is drained; later puts are dropped.
func (b *inbox) finish(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		b.err = err
	}
	b.closed = true
	b.cond.Broadcast()
}

// abort drops what is queued and makes reads return err at once.
func (b *inbox) abort(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil || b.err == io.EOF {
		b.err = err
	}
	b.n = 0
	b.closed = true
	b.buf = nil
	b.cond.Broadcast()
}
