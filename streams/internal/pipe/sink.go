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
// ring as ever.

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
		if p.n > 0 || p.err != nil && !(p.sinkTaken && p.err == io.EOF) {
			// Bytes in the ring (put only once the producer gave the sink
			// back), or the end: an abort at once, an orderly end only
			// after the producer's last write.
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
	return p.sink
}

// SinkDone gives back the sink TakeSink returned and reports the n bytes
// the producer wrote to it, and its error writing, to the consumer.
func (p *Pipe) SinkDone(n int, err error) {
	p.mu.Lock()
	p.sinkTaken = false
	p.sunk += n
	if p.sinkErr == nil {
		p.sinkErr = err
	}
	p.mu.Unlock()
	if n > 0 || err != nil {
		signal(p.readable)
	}
}
