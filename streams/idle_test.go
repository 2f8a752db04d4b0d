package streams

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// testIdle is the idle timeout of these tests: a few of Watch's looks.
const testIdle = 2 * time.Second

// idleForwards are the forwards that take an idle timeout: Pump (HTTP/2
// streams, raw over TLS) and Splice (raw).
var idleForwards = map[string]func(idle time.Duration) func(serverSide, podSide *net.TCPConn) PumpResult{
	"pump": func(idle time.Duration) func(serverSide, podSide *net.TCPConn) PumpResult {
		return func(serverSide, podSide *net.TCPConn) PumpResult {
			return Pump(context.Background(), tcpStream{serverSide}, podSide, NopObserver{}, idle)
		}
	},
	"splice": func(idle time.Duration) func(serverSide, podSide *net.TCPConn) PumpResult {
		return func(serverSide, podSide *net.TCPConn) PumpResult {
			return Splice(context.Background(), serverSide, podSide, NopObserver{}, idle)
		}
	},
}

// TestIdleForwardEnds: a forward that moved a byte and then nothing is
// cut after the idle timeout, as aborted by ErrIdle, and the client sees a
// reset, not an end it could take for the pod's.
func TestIdleForwardEnds(t *testing.T) {
	for name, forward := range idleForwards {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newForwardRig(t, forward(testIdle))
			start := time.Now()
			if _, err := r.client.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1)
			if _, err := io.ReadFull(r.pod, buf); err != nil {
				t.Fatal(err)
			}
			res := r.result(t)
			if res.Result != ResultAborted || !errors.Is(res.Err, ErrIdle) {
				t.Fatalf("forward: got %+v, want aborted by the idle timeout", res)
			}
			// Watch looks every goneWatchEvery: the cut comes at the
			// first look after the timeout, a look or two late.
			if took := time.Since(start); took < testIdle || took > 2*testIdle+goneWatchEvery {
				t.Fatalf("forward cut after %v, want the idle timeout %v, a look or two late", took, testIdle)
			}
			if _, err := readAllTimeout(t, r.client); !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client read after the idle cut: %v, want a reset", err)
			}
		})
	}
}

// TestForwardWithTrafficIsNotIdle: bytes one way only, less often than
// the idle timeout but for longer than it, keep a forward up, each
// direction in turn, then it ends as the peers end it.
func TestForwardWithTrafficIsNotIdle(t *testing.T) {
	for name, forward := range idleForwards {
		for _, dir := range []Direction{ClientToPod, PodToClient} {
			t.Run(name+"/"+dir.String(), func(t *testing.T) {
				t.Parallel()
				r := newForwardRig(t, forward(testIdle))
				from, to := r.client, r.pod
				if dir == PodToClient {
					from, to = r.pod, r.client
				}
				tick := time.NewTicker(testIdle / 4)
				defer tick.Stop()
				buf := make([]byte, 1)
				for end := time.Now().Add(3 * testIdle); time.Now().Before(end); <-tick.C {
					if _, err := from.Write([]byte("x")); err != nil {
						t.Fatal(err)
					}
					to.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, err := io.ReadFull(to, buf); err != nil {
						t.Fatalf("read after %v of paced traffic: %v", time.Since(end.Add(-3*testIdle)), err)
					}
				}
				select {
				case res := <-r.done:
					t.Fatalf("forward ended while bytes moved: %+v", res)
				default:
				}
				r.client.CloseWrite()
				r.pod.CloseWrite()
				if res := r.result(t); res.Result != ResultOK {
					t.Fatalf("forward: got %+v, want ok", res)
				}
			})
		}
	}
}

// TestNoIdleTimeoutWithoutIdle: with idle zero, a silent forward stays
// up (as long as the test looks: several idle timeouts of the others).
func TestNoIdleTimeoutWithoutIdle(t *testing.T) {
	for name, forward := range idleForwards {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newForwardRig(t, forward(0))
			r.client.SetReadDeadline(time.Now().Add(2 * testIdle))
			if _, err := r.client.Read(make([]byte, 1)); !errors.Is(err, syscall.ETIMEDOUT) && !isTimeout(err) {
				t.Fatalf("silent forward without idle timeout: read %v, want our deadline", err)
			}
			r.client.CloseWrite()
			r.pod.CloseWrite()
			if res := r.result(t); res.Result != ResultOK {
				t.Fatalf("forward: got %+v, want ok", res)
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
