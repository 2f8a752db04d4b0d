// How forwards end and what they count, as the daemon's metrics see
// them: each test here was written against a mutation of the package
// that the other tests let through (the review of the package's tests).
package streams

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// byteObserver sums Transferred by direction.
type byteObserver struct {
	NopObserver
	mu    sync.Mutex
	bytes [2]int64
}

func (o *byteObserver) Transferred(d Direction, n int) {
	o.mu.Lock()
	o.bytes[d] += int64(n)
	o.mu.Unlock()
}

func (o *byteObserver) get(d Direction) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bytes[d]
}

// TestForwardsCountBytesToTheObserver: what a forward moves each way
// reaches its Observer (the daemon's bytes_total) as well as its result,
// for Pump and for Splice. Kills Pump not telling the observer, and
// Splice's copies not counting.
func TestForwardsCountBytesToTheObserver(t *testing.T) {
	const up, down = 100 << 10, 300 << 10
	for _, name := range []string{"pump", "splice"} {
		t.Run(name, func(t *testing.T) {
			obs := &byteObserver{}
			r := newForwardRig(t, func(serverSide, podSide *net.TCPConn) PumpResult {
				if name == "splice" {
					return Splice(context.Background(), serverSide, podSide, obs, 0)
				}
				return Pump(context.Background(), tcpStream{serverSide}, podSide, obs, 0)
			})
			send := func(c *net.TCPConn, n int64) {
				io.CopyN(c, rand.Reader, n)
				c.CloseWrite()
			}
			go send(r.client, up)
			go send(r.pod, down)
			for _, side := range []struct {
				c    *net.TCPConn
				want int64
			}{{r.pod, up}, {r.client, down}} {
				got, err := readAllTimeout(t, side.c)
				if err != nil || int64(len(got)) != side.want {
					t.Fatalf("read %d bytes (%v), want %d", len(got), err, side.want)
				}
			}
			res := r.result(t)
			if res.Result != ResultOK || res.Up != up || res.Down != down {
				t.Fatalf("forward: %+v, want ok with %d up and %d down", res, up, down)
			}
			if u, d := obs.get(ClientToPod), obs.get(PodToClient); u != up || d != down {
				t.Fatalf("observer counted %d client→pod and %d pod→client, want %d and %d", u, d, up, down)
			}
		})
	}
}

// TestPumpResultFollowsItsContextsCause: a Pump ended by its context is
// a reset when the cause wraps ErrReset (the client reset the stream),
// but aborted when it wraps ErrConnClosed (the connection under the
// stream ended: no one reset anything) or is anything else. Kills
// causeResult taking every ErrReset for a reset.
func TestPumpResultFollowsItsContextsCause(t *testing.T) {
	for _, tc := range []struct {
		cause error
		want  string
	}{
		{fmt.Errorf("data stream: %w", ErrReset), ResultReset},
		{fmt.Errorf("data stream: %w", ErrConnClosed), ResultAborted},
		{errors.New("session closed"), ResultAborted},
	} {
		t.Run(tc.cause.Error(), func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			r := newPumpRig(t, ctx)
			cancel(tc.cause)
			if res := r.result(t); res.Result != tc.want || !errors.Is(res.Err, tc.cause) {
				t.Fatalf("Pump: %+v, want %s with the cause", res, tc.want)
			}
		})
	}
}

// connStream is a tcpStream whose connection is the client's multiplexed
// connection: a failure is the connection's end (ErrConnClosed), as a
// SPDY stream reports once its connection breaks.
type connStream struct{ tcpStream }

func (s connStream) Read(p []byte) (int, error) {
	n, err := s.tcpStream.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("read: %w", ErrConnClosed)
	}
	return n, err
}

func (s connStream) Write(p []byte) (int, error) {
	n, err := s.tcpStream.Write(p)
	if err != nil {
		err = fmt.Errorf("write: %w", ErrConnClosed)
	}
	return n, err
}

// TestPumpOnABrokenConnectionIsAborted: a stream whose connection broke
// under it ends its Pump as aborted, as the session's end does, not as
// a reset. Kills errResult taking ErrConnClosed for a reset.
func TestPumpOnABrokenConnectionIsAborted(t *testing.T) {
	r := newForwardRig(t, func(serverSide, podSide *net.TCPConn) PumpResult {
		return Pump(context.Background(), connStream{tcpStream{serverSide}}, podSide, NopObserver{}, 0)
	})
	r.client.SetLinger(0)
	r.client.Close() // the connection breaks: an RST
	if res := r.result(t); res.Result != ResultAborted || !errors.Is(res.Err, ErrConnClosed) {
		t.Fatalf("Pump: %+v, want aborted with ErrConnClosed", res)
	}
}

// TestDownloadOutlivesThePodsOrderlyClose: a download cut short by
// nothing. The client half-closes and then does not read; the forward
// passes its FIN on to the pod, which answers with its data and its FIN.
// The daemon's pod socket, FIN sent and FIN received, is then in
// TCP_CLOSE, while the forward still holds the pod's bytes (in the
// socket's queue and the copy's buffer or pipe) for a client that reads
// slowly. That TCP_CLOSE is an orderly end, not a reset: the watch must
// let the forward deliver everything, for Pump and for Splice. Kills
// Watch ignoring FinSent, which took the socket for reset and cut the
// client off with a reset and less than the pod sent.
func TestDownloadOutlivesThePodsOrderlyClose(t *testing.T) {
	if !haveTCPInfo {
		t.Skip("no TCP_INFO here: nothing watches the sockets")
	}
	const size = 2 << 20 // over Splice's pipe (1 MiB) and the client's buffers
	for name, forward := range idleForwards {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			podSides := make(chan *net.TCPConn, 1)
			r := newForwardRig(t, func(serverSide, podSide *net.TCPConn) PumpResult {
				// The client's path holds little (its socket's own
				// buffer is left alone: in Linux one shrunk once
				// connected and left unread for a while stalls for
				// longer than the test waits); the daemon's pod socket
				// takes all the pod sends, so the pod's FIN gets in
				// while the client has not read.
				serverSide.SetWriteBuffer(4 << 10)
				podSide.SetReadBuffer(4 << 20)
				podSides <- podSide
				return forward(0)(serverSide, podSide)
			})
			podSide := <-podSides

			// The client's FIN reaches the pod: the forward has sent our
			// FIN on the pod's connection.
			if err := r.client.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if got, err := readAllTimeout(t, r.pod); err != nil || len(got) != 0 {
				t.Fatalf("pod read %d bytes, %v; want EOF", len(got), err)
			}
			want := make([]byte, size)
			rand.Read(want)
			sent := make(chan error, 1)
			go func() {
				_, err := r.pod.Write(want)
				if err == nil {
					err = r.pod.CloseWrite()
				}
				sent <- err
			}()
			rc, err := podSide.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the daemon's pod socket in TCP_CLOSE after both FINs", func() bool {
				info, ok := tcpInfo(rc)
				return ok && info.closed
			})
			if err := <-sent; err != nil {
				t.Fatalf("pod write: %v", err)
			}
			// The time is the subject: Watch looks every goneWatchEvery,
			// and must look at the socket in this state, at least twice
			// unless a timer is late by half a look, while the client
			// does not read.
			select {
			case res := <-r.done:
				t.Fatalf("forward ended while the client had not read: %+v", res)
			case <-time.After(2*goneWatchEvery + goneWatchEvery/2):
			}

			got, err := readAllTimeout(t, r.client)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("client read %d bytes (%v), want the pod's %d then EOF", len(got), err, size)
			}
			if res := r.result(t); res.Result != ResultOK || res.Up != 0 || res.Down != size {
				t.Fatalf("forward: %+v, want ok with 0 up and %d down", res, size)
			}
		})
	}
}

// TestSpliceResultFollowsItsContext: a raw forward ended by its context
// (the server's drain cut short, or the session's end) is aborted, not
// reset: neither peer reset it. Kills Splice taking every abort for a
// reset.
func TestSpliceResultFollowsItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := newForwardRig(t, func(serverSide, podSide *net.TCPConn) PumpResult {
		return Splice(ctx, serverSide, podSide, NopObserver{}, 0)
	})
	// A byte through: the forward runs.
	if _, err := r.client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	r.pod.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(r.pod, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if res := r.result(t); res.Result != ResultAborted || !errors.Is(res.Err, context.Canceled) {
		t.Fatalf("Splice: %+v, want %s with the context's error", res, ResultAborted)
	}
}
