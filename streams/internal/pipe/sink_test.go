//go:build unix

package pipe

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// sinkPair returns a connected pair of Unix stream sockets: a consumer's
// destination, whose RawConn is its sink, and the peer reading it.
func sinkPair(t *testing.T) (dst *net.UnixConn, sink syscall.RawConn, peer *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socket")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	dst, peer = conn(fds[0]), conn(fds[1])
	sink, err = dst.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return dst, sink, peer
}

// chunkResult is one WriteChunkToSink's return.
type chunkResult struct {
	n          int
	rerr, werr error
}

// consume runs one WriteChunkToSink on a goroutine of its own.
func consume(p *Pipe, w io.Writer, sink syscall.RawConn) <-chan chunkResult {
	ch := make(chan chunkResult, 1)
	go func() {
		n, rerr, werr := p.WriteChunkToSink(w, sink)
		ch <- chunkResult{n, rerr, werr}
	}()
	return ch
}

// takeOffered waits for the consumer to offer its sink and takes it.
func takeOffered(t *testing.T, p *Pipe) syscall.RawConn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s := p.TakeSink(); s != nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatal("the consumer did not offer its sink")
		}
		time.Sleep(time.Millisecond)
	}
}

// stillWaiting fails the test if WriteChunkToSink returns within 50 ms.
// Nothing says the consumer has seen what woke it and gone on waiting:
// a bounded look, which can only miss a regression.
func stillWaiting(t *testing.T, ch <-chan chunkResult, when string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("WriteChunkToSink returned %+v %s", r, when)
	case <-time.After(50 * time.Millisecond):
	}
}

func result(t *testing.T, ch <-chan chunkResult) chunkResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("WriteChunkToSink did not return")
		return chunkResult{}
	}
}

// TestSinkWritesAreReportedAsWritten: the producer takes the waiting
// consumer's sink, writes to it, and gives it back; the consumer's call
// returns those bytes as written (and the peer has them), with the
// producer's error as its write error.
func TestSinkWritesAreReportedAsWritten(t *testing.T) {
	p := New(1 << 10)
	dst, sink, peer := sinkPair(t)
	ch := consume(p, dst, sink)
	s := takeOffered(t, p)
	if _, err := dst.Write([]byte("hello")); err != nil { // as the producer would, through s
		t.Fatal(err)
	}
	errPod := errors.New("pod gone")
	p.SinkDone(5, errPod)
	if r := result(t, ch); r.n != 5 || r.rerr != nil || r.werr != errPod {
		t.Fatalf("WriteChunkToSink: %+v, want 5 bytes, the producer's error as the write's", r)
	}
	if s != sink {
		t.Fatal("TakeSink returned another sink than the consumer's")
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "hello" {
		t.Fatalf("peer read %q, %v", got, err)
	}
}

// TestSinkKeepsTheOrder: while the producer holds the sink, nobody else
// can take it; once it is given back the producer's next bytes go into
// the ring, and the consumer returns the sink's bytes before it writes
// the ring's, so its destination sees them in order. With bytes in the
// ring, the sink cannot be taken.
func TestSinkKeepsTheOrder(t *testing.T) {
	p := New(1 << 10)
	dst, sink, peer := sinkPair(t)
	ch := consume(p, dst, sink)
	takeOffered(t, p)
	if p.TakeSink() != nil {
		t.Fatal("the sink was taken twice")
	}
	dst.Write([]byte("abc"))
	p.SinkDone(3, nil)
	if err := p.Put([]byte("def"), 0); err != nil {
		t.Fatal(err)
	}
	if p.TakeSink() != nil {
		t.Fatal("the sink was taken with bytes in the ring")
	}
	if r := result(t, ch); r.n != 3 || r.rerr != nil || r.werr != nil {
		t.Fatalf("first WriteChunkToSink: %+v, want the sink's 3 bytes", r)
	}
	if r := result(t, consume(p, dst, sink)); r.n != 3 || r.rerr != nil || r.werr != nil {
		t.Fatalf("second WriteChunkToSink: %+v, want the ring's 3 bytes", r)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "abcdef" {
		t.Fatalf("peer read %q, %v; want %q", got, err, "abcdef")
	}
}

// TestSinkEndComesAfterTheProducersBytes: the end of the stream, while
// the producer holds the sink, is returned only after the bytes it
// reports; an abort once the producer writes no more: at once while it
// waits for its source, with the bytes it wrote before, and after its
// write under way otherwise, with that write's bytes, so the consumer
// is told of every byte its socket took.
func TestSinkEndComesAfterTheProducersBytes(t *testing.T) {
	t.Run("finish", func(t *testing.T) {
		p := New(1 << 10)
		dst, sink, _ := sinkPair(t)
		ch := consume(p, dst, sink)
		takeOffered(t, p)
		p.Finish(io.EOF)
		stillWaiting(t, ch, "while the producer held the sink")
		p.SinkDone(2, nil)
		if r := result(t, ch); r.n != 2 || r.rerr != nil {
			t.Fatalf("WriteChunkToSink: %+v, want the sink's 2 bytes before the end", r)
		}
		if r := result(t, consume(p, dst, sink)); r.n != 0 || r.rerr != io.EOF {
			t.Fatalf("WriteChunkToSink after them: %+v, want io.EOF", r)
		}
	})
	t.Run("abort while the producer writes", func(t *testing.T) {
		p := New(1 << 10)
		dst, sink, _ := sinkPair(t)
		ch := consume(p, dst, sink)
		takeOffered(t, p)
		errReset := errors.New("reset")
		p.Abort(errReset)
		stillWaiting(t, ch, "while the producer was writing")
		p.SinkDone(2, nil)
		if r := result(t, ch); r.n != 2 || r.rerr != nil {
			t.Fatalf("WriteChunkToSink: %+v, want the write's 2 bytes", r)
		}
		if r := result(t, consume(p, dst, sink)); r.n != 0 || r.rerr != errReset {
			t.Fatalf("WriteChunkToSink after them: %+v, want the abort", r)
		}
		if p.TakeSink() != nil {
			t.Fatal("an aborted pipe's sink was taken")
		}
	})
	t.Run("abort while the producer waits", func(t *testing.T) {
		p := New(1 << 10)
		dst, sink, _ := sinkPair(t)
		ch := consume(p, dst, sink)
		takeOffered(t, p)
		p.SinkWait(3)
		errReset := errors.New("reset")
		p.Abort(errReset)
		if r := result(t, ch); r.n != 3 || r.rerr != nil {
			t.Fatalf("WriteChunkToSink: %+v, want the 3 bytes written before the wait, at once", r)
		}
		if r := result(t, consume(p, dst, sink)); r.n != 0 || r.rerr != errReset {
			t.Fatalf("WriteChunkToSink after them: %+v, want the abort at once", r)
		}
		if p.SinkResume() {
			t.Fatal("SinkResume let the producer go on writing to an aborted pipe's sink")
		}
		p.SinkDone(3, nil) // the turn's 3 bytes, all reported already
		p.mu.Lock()
		sunk := p.sunk
		p.mu.Unlock()
		if sunk != 0 {
			t.Fatalf("%d bytes reported twice", sunk)
		}
	})
	t.Run("wait and resume", func(t *testing.T) {
		p := New(1 << 10)
		dst, sink, _ := sinkPair(t)
		ch := consume(p, dst, sink)
		takeOffered(t, p)
		// Two waits in one turn, as a DATA frame spliced in pieces from
		// the client has: each reports the turn's bytes so far.
		for _, n := range []int{3, 4} {
			p.SinkWait(n)
			if !p.SinkResume() {
				t.Fatal("SinkResume refused with the pipe open")
			}
		}
		p.SinkDone(5, nil)
		if r := result(t, ch); r.n != 5 || r.rerr != nil || r.werr != nil {
			t.Fatalf("WriteChunkToSink: %+v, want the turn's 5 bytes once", r)
		}
	})
}
