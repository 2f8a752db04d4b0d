package streams

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// PodConn is the pod side of a forwarded connection. *net.TCPConn and
// *net.UnixConn satisfy it.
type PodConn interface {
	net.Conn
	CloseWrite() error
}

// PumpResult says how a Pump ended.
type PumpResult struct {
	// Up and Down count bytes moved client→pod and pod→client.
	Up, Down int64
	// Result is ResultOK, ResultReset or ResultAborted.
	Result string
	// Err is the first error that aborted the pump, if any.
	Err error
}

// Pump copies bytes both ways between the client stream and the pod
// connection until both directions are done, then closes pod.
//
//   - Client EOF half-closes pod (CloseWrite); pod→client goes on.
//   - Pod EOF half-closes the stream (CloseWrite); client→pod goes on.
//   - A reset of the stream, an error on pod (ECONNRESET, EPIPE), a reset
//     of pod's TCP connection (or of the client's, for a stream with a
//     NetConn method) that WatchGone sees while nothing reads or writes it,
//     or ctx being done aborts at once: pod is closed and the stream reset. ctx
//     ends it as ResultAborted, or as ResultReset when its cause wraps
//     ErrReset (the transport learnt of the client's reset that way). A
//     stream error wrapping ErrConnClosed (the connection under it ended)
//     ends it as ResultAborted too, as the session's end does. A client
//     stream that is PodResetting has the pod's TCP connection reset
//     (SO_LINGER 0) rather than closed; so has any whose socket still
//     holds bytes the pod has not taken, which a close would leave in the
//     kernel for as long as the pod does not read.
//
// A positive idle ends it as ResultAborted, its cause wrapping ErrIdle,
// once its TCP sockets (the pod's, and the client's if the stream has a
// NetConn method) have moved no byte for idle (see Watch): for a
// transport whose session has no idle timeout of its own.
//
// Each chunk read is written in one call, so a pod that reads once gets
// everything the client sent in one frame. A client stream that is
// ProgressProbed learns, while such a write waits, whether the pod's TCP
// is acknowledging its bytes (over TCP only).
func Pump(ctx context.Context, client Stream, pod PodConn, obs Observer, idle time.Duration) PumpResult {
	p := &pump{client: client, pod: pod, obs: obs}
	// An abort by ctx that has started is waited for below: once Pump has
	// returned, its caller may finish the stream (an HTTP/2 handler
	// returns), and a Reset after that must not happen.
	aborting := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(aborting)
		cause := context.Cause(ctx)
		p.abort(causeResult(cause), cause)
	})
	// A stream whose buffer's stall checks can ask whether the write to
	// the pod progresses gets a probe of the pod's TCP for it.
	var toPod io.Writer = pod
	if pp, ok := client.(ProgressProbed); ok {
		if tc := tcpConn(pod); tc != nil {
			if a := newAckProbe(pod, tc); a != nil {
				toPod = a
				pp.SetProgressProbe(a.progressed)
				defer pp.SetProgressProbe(nil)
			}
		}
	}
	var wg sync.WaitGroup
	var finToClient, finToPod atomic.Bool
	ws := []Watched{{pod, &finToPod, func() { p.abort(ResultReset, fmt.Errorf("pod connection: %w", ErrReset)) }}}
	if nc, ok := client.(interface{ NetConn() net.Conn }); ok {
		ws = append(ws, Watched{nc.NetConn(), &finToClient, func() { p.abort(ResultReset, fmt.Errorf("client connection: %w", ErrReset)) }})
	}
	stopWatch := Watch(idle, func() { p.abort(ResultAborted, idleError(idle)) }, ws...)
	// pod→client runs on the caller's goroutine: one goroutine started,
	// and one handoff, fewer per forward.
	wg.Add(2)
	go p.copyHalf(&wg, ClientToPod, toPod, client, pod.CloseWrite, &p.up, &finToPod)
	p.copyHalf(&wg, PodToClient, client, pod, client.CloseWrite, &p.down, &finToClient)
	wg.Wait()
	stopWatch()
	if !stop() {
		<-aborting
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.result == "" {
		p.result = ResultOK
		pod.Close()
	}
	return PumpResult{Up: p.up, Down: p.down, Result: p.result, Err: p.err}
}

type pump struct {
	client Stream
	pod    PodConn
	obs    Observer

	up, down int64 // owned by the goroutine of each direction until wg.Wait

	mu     sync.Mutex
	result string // set once, by abort or at the end
	err    error
}

// abort tears both sides down; the first caller's reason wins.
func (p *pump) abort(result string, err error) {
	p.mu.Lock()
	first := p.result == ""
	if first {
		p.result, p.err = result, err
	}
	p.mu.Unlock()
	if first {
		if tc := tcpConn(p.pod); tc != nil {
			if _, ok := p.client.(PodResetting); ok || unsent(tc) {
				tc.SetLinger(0)
			}
		}
		p.pod.Close()
		p.client.Reset()
	}
}

// PodResetting is a client Stream whose forward, when it aborts, resets
// the pod's TCP connection (SO_LINGER 0) instead of closing it: the pod
// then sees the client's reset, or the idle timeout, as a failure, not as
// an orderly end it would take for the client's (a raw forward over TLS,
// as Splice does for one over TCP).
type PodResetting interface {
	Stream
	PodResetting()
}

func (p *pump) aborted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.result != ""
}

// ChunkWriterTo is a stream that can hand its buffered bytes to a writer
// without copying them out first (the SPDY engine's streams). The pump uses
// it for client→pod: the bytes go from the stream's buffer to the pod's
// socket with no user-space copy in between.
type ChunkWriterTo interface {
	// WriteChunkTo waits for data like Read and writes one contiguous run
	// of it to w; it returns the bytes written, Read's error, and w's.
	WriteChunkTo(w io.Writer) (n int, rerr, werr error)
}

// SocketChunkWriterTo is a ChunkWriterTo whose connection can write the
// client's bytes to the pod's socket itself while the pump waits for
// them (the SPDY engine's streams on a plain TCP connection): they go
// from the client's socket to the pod's with splice(2), and no goroutine
// hands them to another.
type SocketChunkWriterTo interface {
	// WriteChunkToSocket is WriteChunkTo, for a w that writes to sock.
	WriteChunkToSocket(w io.Writer, sock syscall.Conn) (n int, rerr, werr error)
}

// socketOf returns the socket a pump's writes to w go to, when they go
// to one unchanged: w is the pod's connection, or the probe of it.
func socketOf(w io.Writer) syscall.Conn {
	if a, ok := w.(*ackProbe); ok {
		w = a.w
	}
	switch sc := w.(type) {
	case *net.TCPConn:
		return sc
	case *net.UnixConn:
		return sc
	}
	return nil
}

// ChunkSplicer is a stream that can take bytes from a socket with
// splice(2): the SPDY engine's streams on a plain TCP connection. The pump
// uses it for pod→client, so the bytes go from the pod's socket to the
// client's without entering user space.
type ChunkSplicer interface {
	// CanSplice reports whether SpliceChunkFrom works on this stream.
	CanSplice() bool
	// SpliceChunkFrom waits for data on src and moves one chunk of it to
	// the stream; it returns the bytes moved, src's error, and the
	// stream's.
	SpliceChunkFrom(src syscall.Conn) (n int, rerr, werr error)
}

// splicer returns dst as a ChunkSplicer, and src as the socket it splices
// from, when both can.
func splicer(dst io.Writer, src io.Reader) (ChunkSplicer, syscall.Conn, bool) {
	sp, ok := dst.(ChunkSplicer)
	if !ok || !sp.CanSplice() {
		return nil, nil, false
	}
	switch sc := src.(type) {
	case *net.TCPConn:
		return sp, sc, true
	case *net.UnixConn:
		return sp, sc, true
	}
	return nil, nil, false
}

// copyHalf moves one direction until src ends. On EOF it passes the
// half-close on with closeWrite; any other error aborts the whole pump.
// It is a named method so both directions show up in stack dumps.
func (p *pump) copyHalf(wg *sync.WaitGroup, dir Direction, dst io.Writer, src io.Reader, closeWrite func() error, count *int64, finSent *atomic.Bool) {
	defer wg.Done()
	chunks, direct := src.(ChunkWriterTo)
	sinker, _ := src.(SocketChunkWriterTo)
	podSock := socketOf(dst)
	sp, sock, spliced := splicer(dst, src)
	// A read from the pod becomes one stream write (SPDY frames of up to
	// 128 KiB each, written in one batch), so bulk reads of 1 MiB mean few
	// syscalls and handoffs.
	var buf copyBuffer
	defer buf.release()
	for {
		var n int
		var rerr, werr error
		switch {
		case spliced:
			n, rerr, werr = sp.SpliceChunkFrom(sock)
		case sinker != nil && podSock != nil:
			n, rerr, werr = sinker.WriteChunkToSocket(dst, podSock)
		case direct:
			n, rerr, werr = chunks.WriteChunkTo(dst)
		default:
			// What dst took is counted: a stream may drop what no one
			// will read (a v4 port after the client's close).
			b := buf.bytes()
			var read int
			if read, rerr = src.Read(b); read > 0 {
				n, werr = dst.Write(b[:read])
			}
			buf.adapt(read)
		}
		if n > 0 {
			*count += int64(n)
			p.obs.Transferred(dir, n)
		}
		if werr != nil {
			p.abort(errResult(werr), werr)
			return
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			if !p.aborted() {
				finSent.Store(true)
				if err := closeWrite(); err != nil {
					p.abort(errResult(err), err)
				}
			}
			return
		default:
			p.abort(errResult(rerr), rerr)
			return
		}
	}
}

// causeResult is the result of a forward that a context ended with cause:
// reset when the cause wraps ErrReset (the client reset the stream),
// aborted otherwise (the session or the connection ended).
func causeResult(cause error) string {
	if errors.Is(cause, ErrReset) && !errors.Is(cause, ErrConnClosed) {
		return ResultReset
	}
	return ResultAborted
}

// errResult is the result of a pump that err ended: aborted when the
// client's connection ended under the stream, reset otherwise.
func errResult(err error) string {
	if errors.Is(err, ErrConnClosed) {
		return ResultAborted
	}
	return ResultReset
}
