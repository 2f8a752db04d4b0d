package pipe

import (
	"io"
	"syscall"
)

// A consumer that waits on an empty pipe may offer the producer its
// destination, a socket: its sink. A producer that finds the pipe empty
// and the sink offered may take it and write the bytes it would have put
// in straight to the socket, from its own goroutine, with no copy into the
// ring and no handoff; SinkDone gives the sink back and reports them, and
// the consumer's wait returns them as written. While the producer holds
// the sink the consumer writes nothing, and the producer takes it only
// while the ring is empty, so the socket gets the bytes in order. The
// producer must not wait on the socket while it holds the sink: a write
// the socket cannot take whole ends its turn, and the rest goes into the
// ring as ever. A producer that waits for its own source while it holds
// the sink says so (SinkWait, SinkResume): an abort then returns at once,
// with the bytes written so far; otherwise it returns once the producer's
// write under way is over, with its bytes, so that the consumer is told
// of every byte its socket took.

// WriteChunkToSink is WriteChunkTo, offering sink while the pipe is empty:
// it returns the bytes the producer wrote to sink meanwhile, and the
// producer's error writing them as w's, as soon as it gives the sink
// back. sink must be the socket under w. Only the consumer may call it.
func (p *Pipe) WriteChunkToSink(w io.Writer, sink syscall.RawConn) (n int, rerr, werr error) {
	for {
		p.mu.Lock()
		if p.sunk > 0 || p.sinkErr != nil {
			n, werr = p.sunk, p.sinkErr
			p.sunk, p.sinkErr = 0, nil
			p.sink = nil
			p.mu.Unlock()
			return n, nil, werr
		}
		if p.n > 0 || p.err != nil && (!p.sinkTaken || p.err != io.EOF && p.sinkWait) {
			// Bytes in the ring (put only once the producer gave the sink
			// back), or the end: an orderly end only after the producer's
			// last write, an abort once the producer writes no more (it
			// gave the sink back, or waits for its source and will not
			// write after it).
			p.sink = nil
			p.mu.Unlock()
			return p.WriteChunkTo(w)
		}
		p.sink = sink
		grown := len(p.buf) > minSize
		p.mu.Unlock()
		p.waitReadable(grown)
	}
}

// Offered reports whether a consumer waits with its sink offered and the
// producer does not hold it.
func (p *Pipe) Offered() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sink != nil && !p.sinkTaken
}

// TakeSink returns the consumer's sink, taken for the producer's writes,
// if the consumer offers one and the ring is empty; nil otherwise. The
// producer must give it back with SinkDone.
func (p *Pipe) TakeSink() syscall.RawConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sink == nil || p.sinkTaken || p.n > 0 || p.closed {
		return nil
	}
	p.sinkTaken = true
	p.sinkWait, p.waitSunk = false, 0
	return p.sink
}

// SinkWait reports that the producer holding the sink has written n
// bytes to it in this turn (those reported before included), and is
// about to wait for its source, writing nothing meanwhile: an abort then
// returns to the consumer at once, with those bytes.
func (p *Pipe) SinkWait(n int) {
	p.mu.Lock()
	p.sunk += n - p.waitSunk
	p.waitSunk = n
	p.sinkWait = true
	aborted := p.err != nil
	p.mu.Unlock()
	if aborted {
		signal(p.readable) // a consumer may wait for the write that was under way
	}
}

// SinkResume ends the producer's wait for its source: false when the
// pipe was finished or aborted meanwhile, and the producer must write
// nothing more to the sink (and give it back with SinkDone).
func (p *Pipe) SinkResume() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sinkWait = false
	return !p.closed
}

// SinkDone gives back the sink TakeSink returned and reports the n bytes
// the producer wrote to it in this turn (those SinkWait reported
// included), and its error writing, to the consumer.
func (p *Pipe) SinkDone(n int, err error) {
	p.mu.Lock()
	p.sinkTaken, p.sinkWait = false, false
	n -= p.waitSunk
	p.waitSunk = 0
	p.sunk += n
	if p.sinkErr == nil {
		p.sinkErr = err
	}
	aborted := p.err != nil
	p.mu.Unlock()
	if n > 0 || err != nil || aborted {
		signal(p.readable)
	}
}
