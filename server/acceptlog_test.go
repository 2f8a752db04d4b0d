package server

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
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
