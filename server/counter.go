package server

import (
	"context"
	"sync"
)

// counter is a count that can be waited on to fall to zero. Its lock is
// its owner's: n is read and written under it.
type counter struct {
	n    int
	zero chan struct{} // closed when n falls to zero; nil when none waits
}

// add adds d under mu.
func (c *counter) add(mu *sync.Mutex, d int) {
	mu.Lock()
	defer mu.Unlock()
	c.n += d
	if c.n == 0 && c.zero != nil {
		close(c.zero)
		c.zero = nil
	}
}

// awaitZero returns once n is zero, or ctx's error when it ends first.
func (c *counter) awaitZero(ctx context.Context, mu *sync.Mutex) error {
	mu.Lock()
	if c.n == 0 {
		mu.Unlock()
		return nil
	}
	if c.zero == nil {
		c.zero = make(chan struct{})
	}
	zero := c.zero
	mu.Unlock()
	select {
	case <-zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
