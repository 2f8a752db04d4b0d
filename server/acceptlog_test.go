package server

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// failOnce is a real listener whose first Accept fails with err, as the
// kernel's accept(2) does when it is short of memory: that cannot be
// brought about here on purpose.
type failOnce struct {
	net.Listener
	err    error
	failed atomic.Bool
}

func (l *failOnce) Accept() (net.Conn, error) {
	if l.failed.CompareAndSwap(false, true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", l.err)}
	}
	return l.Listener.Accept()
}

// TestAcceptShortOfMemoryIsRetried: an accept that fails for want of
// kernel memory (ENOMEM, ENOBUFS) is retried by the server, as one that
// fails for want of file descriptors is. Go marks only the latter
// temporary, and net/http's Serve returned on the former: the listener
// stopped for good, on --listen and on --metrics-listen.
func TestAcceptShortOfMemoryIsRetried(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOMEM, syscall.ENOBUFS, syscall.EMFILE} {
		for _, listener := range []string{"--listen", "--metrics-listen"} {
			t.Run(errno.Error()+" "+listener, func(t *testing.T) {
				s := New(Config{Resolver: fuzzResolver{}, Dialer: gatedDialer{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
				s.MarkServing()
				ln, err := net.Listen("tcp4", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				inner := &failOnce{Listener: ln, err: errno}
				var hs *http.Server
				var wrapped net.Listener
				if listener == "--listen" {
					hs, wrapped = s.NewHTTPServer(), s.Listener(inner)
				} else {
					hs, wrapped = s.NewMetricsHTTPServer(), s.MetricsListener(inner)
				}
				served := make(chan error, 1)
				go func() { served <- hs.Serve(wrapped) }()
				t.Cleanup(func() { hs.Close() })

				client := &http.Client{Timeout: 10 * time.Second}
				resp, err := client.Get("http://" + ln.Addr().String() + "/healthz")
				select {
				case err := <-served:
					t.Fatalf("the server stopped at a failed accept: %v", err)
				default:
				}
				if err != nil {
					t.Fatalf("after a failed accept: %v", err)
				}
				resp.Body.Close()
				if !inner.failed.Load() {
					t.Fatal("no accept failed")
				}
			})
		}
	}
}

// TestAcceptShortageEpisodeGoesOnWhileAcceptsFail: when the calm timer of
// an episode fires while accepts are still failing (the last failure is
// newer than acceptCalm), the episode goes on: no "accepting connections
// again" while clients still wait, and no second warning for the same
// shortage when the next accept fails. The timer's run is made here by
// calling settle, as the timer would, right after a failure.
func TestAcceptShortageEpisodeGoesOnWhileAcceptsFail(t *testing.T) {
	var logs syncBuffer
	a := newAcceptShortage(slog.New(slog.NewTextHandler(&logs, nil)), "--listen")
	defer a.close()
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	a.failed(emfile)
	a.settle() // the calm timer, with the last failure just now
	a.failed(emfile)
	if got := strings.Count(logs.String(), "cannot accept connections"); got != 1 {
		t.Errorf("%d warnings for one episode, want 1; log:\n%s", got, logs.String())
	}
	if strings.Contains(logs.String(), "accepting connections again") {
		t.Errorf("the episode was said to be over while accepts still failed; log:\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer that a timer's goroutine may write while
// the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
