// Package pipe is the bounded byte pipe between a connection's reader
// goroutine and one stream's consumer. The reader puts bytes in, waiting
// for room when the pipe is full (for a bounded time, if asked); the
// consumer reads them out. Closing the consumer side makes puts discard
// instead of wait, so a finished stream never stalls its connection. A
// consumer waiting on an empty pipe may offer the producer its socket, to
// write to directly while the pipe stays empty (WriteChunkToSink).
package pipe

import (
	"errors"
	"io"
	"sync"
	"syscall"
	"time"
)

// ErrStalled is returned by Put when the pipe stayed full for the stall
// time with no byte read.
var ErrStalled = errors.New("pipe: consumer made no progress")

// Pipe is a ring buffer that grows on demand, from minSize up to its
// capacity, so that a stream that receives little costs little. A ring
// grown past minSize is given back once its consumer has read it empty
// and waited shrinkAfter for more, so a stream that once held its
// capacity does not keep it for the rest of its life.
type Pipe struct {
	mu      sync.Mutex
	buf     []byte // len(buf) is the current ring size
	start   int
	n       int
	max     int
	err     error       // what reads return once the buffer is empty
	closed  bool        // puts are dropped
	putting bool        // PutFrom is copying into the ring outside the lock
	idle    *time.Timer // the consumer's wait for shrinkAfter; only the consumer uses it

	readable chan struct{} // signalled when bytes or an error arrive
	writable chan struct{} // signalled when room appears or the pipe closes

	probe func() bool // the consumer's progress out of sight of the pipe; see SetProbe

	// The consumer's sink (sink.go).
	sink      syscall.RawConn // offered by a consumer waiting on an empty pipe
	sinkTaken bool            // the producer is writing to sink
	sinkWait  bool            // the producer holding sink waits for its source (SinkWait), writing nothing
	waitSunk  int             // bytes of the producer's turn with sink that SinkWait already reported
	sunk      int             // bytes the producer wrote to sink, not yet reported to the consumer
	sinkErr   error           // the producer's failure writing to sink, not yet reported

	// OnRead, if set, is called (without the lock) with each count read.
	OnRead func(n int)
	// OnPut, if set, is called (without the lock) with each count put in,
	// before a reader can see those bytes.
	OnPut func(n int)
}

// New returns a pipe that holds at most max bytes.
func New(max int) *Pipe {
	return &Pipe{max: max, readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// SetProbe registers, for the consumer, a probe of progress the pipe
// cannot see: a write of bytes read from the pipe (or being read by
// WriteChunkTo) that has not returned, but whose destination is taking
// them. probe reports whether the write under way has made progress since
// probe was last called; it is called only by Progressed, never on the
// bulk path. nil removes it.
func (p *Pipe) SetProbe(probe func() bool) {
	p.mu.Lock()
	p.probe = probe
	p.mu.Unlock()
}

// Progressed asks the consumer's probe (SetProbe) whether the consumer
// has made progress since the probe was last asked, though it may have
// read nothing: false without a probe. A put that gave up with ErrStalled,
// or a check whether the pipe is stale, asks it before counting the
// consumer as stalled: a pod that reads slowly leaves the write to its
// socket waiting for longer than the stall time (the kernel wakes a
// writer on a full socket only once a third of its send buffer is free),
// while it takes bytes all along.
func (p *Pipe) Progressed() bool {
	p.mu.Lock()
	probe := p.probe
	p.mu.Unlock()
	return probe != nil && probe()
}

// Buffered returns how many bytes wait to be read.
func (p *Pipe) Buffered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// Drained reports whether the pipe is finished or aborted and holds
// nothing: a Read would return the finishing error at once, and nothing
// more will come in.
func (p *Pipe) Drained() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n == 0 && p.err != nil
}

// Put copies b in. It waits while the pipe is full; with stall > 0 it gives
// up with ErrStalled once the pipe has been full for stall without a read
// (the caller may then ask Progressed whether the consumer is stalled).
// After Close or Abort it drops b and returns nil.
func (p *Pipe) Put(b []byte, stall time.Duration) error {
	_, err := p.PutFrom(sliceReader{&b}, len(b), stall)
	return err
}

type sliceReader struct{ b *[]byte }

func (r sliceReader) Read(p []byte) (int, error) {
	n := copy(p, *r.b)
	*r.b = (*r.b)[n:]
	return n, nil
}

// PutFrom copies n bytes from r straight into the ring, with Put's waiting
// rules, and returns how many bytes it consumed from r. Bytes that arrive
// after the consumer side closed are read from r and dropped, so r is
// consumed by n bytes unless it fails or the put stalls.
func (p *Pipe) PutFrom(r io.Reader, n int, stall time.Duration) (int, error) {
	consumed := 0
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for n > 0 {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			d, err := io.CopyN(io.Discard, r, int64(n))
			return consumed + int(d), err
		}
		if p.n == len(p.buf) && len(p.buf) < p.max {
			p.grow(n)
		}
		if p.n == p.max {
			p.mu.Unlock()
			var expired <-chan time.Time
			if stall > 0 {
				if timer == nil {
					timer = time.NewTimer(stall)
				}
				expired = timer.C
			}
			select {
			case <-p.writable:
				if timer != nil {
					timer.Reset(stall)
				}
			case <-expired:
				return consumed, ErrStalled
			}
			continue
		}
		size := len(p.buf)
		end := (p.start + p.n) % size
		room := size - p.n
		if end+room > size {
			room = size - end
		}
		if room > n {
			room = n
		}
		dst := p.buf[end : end+room]
		p.putting = true
		p.mu.Unlock()
		// Only this goroutine writes into the free region, and readers never
		// touch it, so the copy needs no lock.
		got, err := io.ReadFull(r, dst)
		if p.OnPut != nil && got > 0 {
			p.OnPut(got)
		}
		p.mu.Lock()
		p.putting = false
		kept := !p.closed
		if kept {
			p.n += got
		} else {
			p.releaseLocked() // the consumer may have seen the end meanwhile
		}
		p.mu.Unlock()
		if !kept && p.OnRead != nil && got > 0 {
			p.OnRead(got) // never readable: account it as gone
		}
		signal(p.readable)
		consumed += got
		if err != nil {
			return consumed, err
		}
		n -= got
	}
	return consumed, nil
}

// Read returns buffered bytes, waiting for some; once the pipe is finished
// it drains the buffer and then returns the finishing error.
func (p *Pipe) Read(b []byte) (int, error) {
	for {
		p.mu.Lock()
		if p.n > 0 {
			size := len(p.buf)
			end := min(p.start+p.n, size)
			c := copy(b, p.buf[p.start:end])
			p.start = (p.start + c) % size
			p.n -= c
			p.mu.Unlock()
			signal(p.writable)
			if p.OnRead != nil {
				p.OnRead(c)
			}
			return c, nil
		}
		if p.err != nil {
			err := p.err
			p.releaseLocked()
			p.mu.Unlock()
			return 0, err
		}
		grown := len(p.buf) > minSize
		p.mu.Unlock()
		p.waitReadable(grown)
	}
}

// WriteChunkTo waits for buffered bytes, like Read, and writes one
// contiguous run of them, at most maxChunk, straight from the ring to w,
// without copying them out first. It returns the bytes written, the error a Read would
// have returned (the finishing error once the buffer is drained), and w's
// error. Only the consumer may call it, never alongside Read.
func (p *Pipe) WriteChunkTo(w io.Writer) (n int, rerr, werr error) {
	for {
		p.mu.Lock()
		if p.n > 0 {
			seg := p.buf[p.start:min(p.start+p.n, len(p.buf), p.start+maxChunk)]
			p.mu.Unlock()
			// The producer writes only into the free region and grow keeps
			// the unread bytes in order (moved to the front), so seg stays
			// valid and unread while w has it; consuming it afterwards is
			// advancing start by what was written, whatever the ring is now.
			n, werr = w.Write(seg)
			p.mu.Lock()
			// nil: aborted meanwhile, and Abort already counted these bytes
			// as dropped.
			consumed := n > 0 && p.buf != nil
			if consumed {
				p.start = (p.start + n) % len(p.buf)
				p.n -= n
			}
			p.mu.Unlock()
			if consumed {
				signal(p.writable)
				if p.OnRead != nil {
					p.OnRead(n)
				}
			}
			return n, nil, werr
		}
		if p.err != nil {
			err := p.err
			p.releaseLocked()
			p.mu.Unlock()
			return 0, err, nil
		}
		grown := len(p.buf) > minSize
		p.mu.Unlock()
		p.waitReadable(grown)
	}
}

// minSize is the ring's first size.
const minSize = 32 << 10

// maxChunk bounds what WriteChunkTo hands w at once. Its bytes count as
// read only once w took them all, and a put waiting on a full pipe gives
// up when nothing was read for its stall time: a pod that reads slowly
// but steadily must be seen to take bytes well within that time, not
// only once a whole ring's worth (8 MiB for a SPDY stream) is in its
// socket. A pod slower still, whose socket wakes the writer less often
// than that, is seen through the consumer's probe (SetProbe).
const maxChunk = 256 << 10

// grow enlarges a full ring to fit want more bytes (doubling, at most max),
// moving its contents to the front. p.mu is held.
func (p *Pipe) grow(want int) {
	size := max(len(p.buf)*2, minSize)
	for size < p.n+want && size < p.max {
		size *= 2
	}
	size = min(size, p.max)
	nb := getRing(size)
	if p.n > 0 {
		first := copy(nb, p.buf[p.start:min(p.start+p.n, len(p.buf))])
		copy(nb[first:], p.buf[:p.n-first])
	}
	p.buf, p.start = nb, 0
}

// shrinkAfter is how long a ring grown past minSize may stay empty, its
// consumer waiting, before it is given back. Giving it back at once cost
// a bulk transfer a ring taken and grown again each time its pod caught
// up (a third more CPU per byte); a second keeps that off the bulk path
// and still frees an idle stream's ring.
const shrinkAfter = time.Second

// waitReadable waits, as the consumer, for bytes or an error. While it
// waits on a ring grown past minSize (grown) for shrinkAfter, the ring is
// given back.
func (p *Pipe) waitReadable(grown bool) {
	if !grown {
		<-p.readable
		return
	}
	if p.idle == nil {
		p.idle = time.NewTimer(shrinkAfter)
	} else {
		p.idle.Reset(shrinkAfter)
	}
	select {
	case <-p.readable:
		p.idle.Stop()
		return
	case <-p.idle.C:
	}
	p.mu.Lock()
	p.shrinkLocked()
	p.mu.Unlock()
	<-p.readable
}

// shrinkLocked gives an empty ring grown past minSize back to the pool of
// its size; the next put takes a ring that fits it. Only the consumer
// calls it, waiting for bytes: it holds no part of the ring then, and
// with no put copying into it, nobody does. p.mu is held.
func (p *Pipe) shrinkLocked() {
	if p.n > 0 || p.putting || len(p.buf) <= minSize {
		return
	}
	putRing(p.buf)
	p.buf, p.start = nil, 0
}

// releaseLocked gives the ring of a finished pipe read to its end back to
// the pool, whatever its size: nothing is put in it any more (puts are
// dropped once the pipe is closed), and its consumer, told of the end,
// never waits on it again for shrinkLocked to run. A ring a put is still
// copying into is kept. p.mu is held.
func (p *Pipe) releaseLocked() {
	if !p.closed || p.n > 0 || p.putting || p.buf == nil {
		return
	}
	putRing(p.buf)
	p.buf, p.start = nil, 0
}

// rings pools the rings pipes gave back, a sync.Pool per size: a stream
// whose pod falls behind again soon takes one instead of allocating and
// zeroing it, and the garbage collector empties the pools of rings nobody
// takes.
var rings sync.Map // int → *sync.Pool of *[]byte

func getRing(size int) []byte {
	if pool, ok := rings.Load(size); ok {
		if b, ok := pool.(*sync.Pool).Get().(*[]byte); ok {
			return *b
		}
	}
	return make([]byte, size)
}

func putRing(b []byte) {
	pool, ok := rings.Load(len(b))
	if !ok {
		pool, _ = rings.LoadOrStore(len(b), new(sync.Pool))
	}
	pool.(*sync.Pool).Put(&b)
}

// Finish makes reads return err (io.EOF for an orderly end) once the
// buffer is drained. Later puts are dropped.
func (p *Pipe) Finish(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.closed = true
	p.mu.Unlock()
	signal(p.readable)
	signal(p.writable)
}

// Abort drops what is buffered and makes reads return err at once; it
// returns how many bytes were dropped.
func (p *Pipe) Abort(err error) int {
	p.mu.Lock()
	return p.abortLocked(err)
}

// AbortHeld is Abort while bytes are buffered, and does nothing (0)
// otherwise: of several callers racing to abort a pipe for what it holds,
// or one racing the consumer's last read, at most one aborts it.
func (p *Pipe) AbortHeld(err error) int {
	p.mu.Lock()
	if p.n == 0 {
		p.mu.Unlock()
		return 0
	}
	return p.abortLocked(err)
}

// abortLocked is Abort with p.mu held; it unlocks it.
func (p *Pipe) abortLocked(err error) int {
	if p.err == nil || p.err == io.EOF {
		p.err = err
	}
	dropped := p.n
	p.n = 0
	p.closed = true
	p.buf = nil
	p.mu.Unlock()
	signal(p.readable)
	signal(p.writable)
	return dropped
}
