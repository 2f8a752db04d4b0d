package server

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// The idle GOAWAY goes out beside net/http's own writes, which go on
// while no stream is open as the client's control frames ask (PING acks
// here). Go's HTTP/2 server writes its frames through a 4 KiB buffer, and
// a frame that does not fit is written in two pieces: a GOAWAY written
// between them lands inside that frame, and the client reads garbage from
// there on. Each connection here floods PINGs across the idle timeout and
// reads every frame: each PING ack must carry the next payload sent, the
// GOAWAY must read as ours, and so must the 1000 acks after it. (The
// flood is the test's means, not its subject: the timer fires while acks
// are being written; no sleep is needed.)
func TestIdleGoAwayNeverSplitsAFrame(t *testing.T) {
	addr := serveEchoing(t, Config{IdleConnTimeout: 50 * time.Millisecond})
	deadline := time.Now().Add(8 * time.Second)
	conns := 0
	for ; conns < 40 && time.Now().Before(deadline); conns++ {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		fr := h2Preface(t, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		stop := make(chan struct{})
		sent := make(chan error, 1)
		var acked atomic.Uint64
		go func() {
			// Batches of PINGs, each batch one write: Go's server queues
			// their acks while it writes the ones before.
			bw := bufio.NewWriterSize(c, 64<<10)
			pf := http2.NewFramer(bw, nil)
			var n uint64
			for {
				select {
				case <-stop:
					sent <- nil
					return
				default:
				}
				if n-acked.Load() > 6000 {
					// No further ahead of the acks than Go's server lets
					// control frames queue (10000).
					runtime.Gosched()
					continue
				}
				for range 300 {
					var data [8]byte
					binary.BigEndian.PutUint64(data[:], n)
					n++
					pf.WritePing(false, data)
				}
				if err := bw.Flush(); err != nil {
					sent <- nil // the server closed: the reader says why
					return
				}
			}
		}()
		var want uint64
		var goneAway bool
		var after uint64 // acks read after the GOAWAY
		for after < 1000 {
			f, err := fr.ReadFrame()
			if err != nil {
				if goneAway && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)) {
					// Closed, goAwayGrace on, maybe inside a frame.
					break
				}
				close(stop)
				c.Close()
				<-sent
				t.Fatalf("connection %d: after %d PING acks (GOAWAY read: %v): %v", conns, want, goneAway, err)
			}
			switch f := f.(type) {
			case *http2.PingFrame:
				if !f.IsAck() {
					continue
				}
				if got := binary.BigEndian.Uint64(f.Data[:]); got != want {
					close(stop)
					c.Close()
					<-sent
					t.Fatalf("connection %d: PING ack %d, want %d: a frame was cut", conns, got, want)
				}
				want++
				acked.Store(want)
				if goneAway {
					after++
				}
			case *http2.GoAwayFrame:
				if f.ErrCode != http2.ErrCodeNo || f.LastStreamID != 1<<31-1 || len(f.DebugData()) != 0 {
					close(stop)
					c.Close()
					<-sent
					t.Fatalf("connection %d: GOAWAY %v last stream %d debug %q, want ours", conns, f.ErrCode, f.LastStreamID, f.DebugData())
				}
				goneAway = true
			}
		}
		close(stop)
		c.Close()
		<-sent
	}
	t.Logf("%d connections", conns)
}

// isReset reports whether err is the connection's failure, not a deadline:
// a reset, when the daemon closes with PINGs unread.
func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !errors.Is(err, os.ErrDeadlineExceeded)
}
