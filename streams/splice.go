package streams

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Splice copies bytes both ways between two TCP connections with the
// pump's half-close rules (EOF from one side becomes CloseWrite on the
// other; an error aborts both, resetting them) and closes both before it
// returns. Between two *net.TCPConn, io.Copy moves the bytes with
// splice(2), without copying them through user space. Byte counts reach
// obs every spliceCount bytes and when each direction ends. A connection
// that neither direction reads or writes at the moment (its direction has
// ended, or waits on the other peer) is looked at by WatchGone: one
// reset or timed out aborts the forward, so a peer gone after its FIN, or
// while the other does not read, does not hold both sockets for as long
// as the other stays silent. A positive idle ends the forward as Pump's
// does, when neither socket has moved a byte for that long.
func Splice(ctx context.Context, client, pod *net.TCPConn, obs Observer, idle time.Duration) PumpResult {
	var (
		mu     sync.Mutex
		result string
		first  error
	)
	abort := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if result != "" {
			return
		}
		result, first = ResultReset, err
		if errors.Is(err, context.Canceled) || errors.Is(err, ErrIdle) {
			result = ResultAborted
		}
		// SO_LINGER 0: the peers see a reset, as the failure was.
		client.SetLinger(0)
		pod.SetLinger(0)
		client.Close()
		pod.Close()
	}
	stop := context.AfterFunc(ctx, func() { abort(context.Cause(ctx)) })
	defer stop()

	var up, down int64
	var wg sync.WaitGroup
	// finSent[dst]: dst was sent our FIN. From then on TCP_CLOSE may be
	// the end of an orderly close, and the direction reading dst sees a
	// reset by itself.
	var finToClient, finToPod atomic.Bool
	half := func(dst, src *net.TCPConn, n *int64, dir Direction, finSent *atomic.Bool) {
		defer wg.Done()
		c, err := copyCounted(dst, src, func(k int64) { obs.Transferred(dir, int(k)) })
		*n = c
		if err != nil {
			abort(err)
			return
		}
		finSent.Store(true)
		if err := dst.CloseWrite(); err != nil {
			abort(err)
		}
	}
	stopWatch := Watch(idle, func() { abort(idleError(idle)) },
		Watched{client, &finToClient, func() { abort(fmt.Errorf("client connection: %w", ErrReset)) }},
		Watched{pod, &finToPod, func() { abort(fmt.Errorf("pod connection: %w", ErrReset)) }})
	// pod→client runs on the caller's goroutine: one goroutine fewer per
	// forward.
	wg.Add(2)
	go half(pod, client, &up, ClientToPod, &finToPod)
	half(client, pod, &down, PodToClient, &finToClient)
	wg.Wait()
	stopWatch()

	mu.Lock()
	defer mu.Unlock()
	if result == "" {
		result = ResultOK
		client.Close()
		pod.Close()
	}
	return PumpResult{Up: up, Down: down, Result: result, Err: first}
}

// spliceCount is what one io.Copy of Splice moves at most before its bytes
// are counted: a long transfer shows in bytes_total as it runs, and each
// count costs one more round of Go's splice (a pipe from its pool).
const spliceCount = 64 << 20

// copyCounted is io.Copy from src to dst, which splices between two TCP
// connections (an *io.LimitedReader around src keeps it on that path),
// telling count what each spliceCount or less moved.
func copyCounted(dst, src *net.TCPConn, count func(int64)) (int64, error) {
	var total int64
	for {
		k, err := io.Copy(dst, &io.LimitedReader{R: src, N: spliceCount})
		total += k
		if k > 0 {
			count(k)
		}
		if err != nil || k < spliceCount { // an error, or src's EOF
			return total, err
		}
	}
}
