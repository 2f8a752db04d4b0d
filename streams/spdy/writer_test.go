package spdy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	spdyframe "github.com/moby/spdystream/spdy"
)

// unvectored hides a TCP connection's writev, as TLS and the WebSocket
// tunnel do: the writer copies each batch into one Write.
type unvectored struct{ net.Conn }

// TestQuietUnvectoredConnectionHoldsNoBatch: on a connection without
// writev, a writer that has gone quiet holds neither the copy of its last
// batch nor the callers' buffers that batch was taken from. It held both:
// about 1 MiB for the copy and every buffer of the last batch (a pump's
// 1 MiB copy buffer, say) per connection, for the connection's life.
func TestQuietUnvectoredConnectionHoldsNoBatch(t *testing.T) {
	// One SYN_STREAM, encoded once: each connection's inflater starts
	// afresh, and no client compressor (650 KiB each) skews the heap.
	var syn bytes.Buffer
	fw, err := spdyframe.NewFramer(&syn, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.WriteFrame(&spdyframe.SynStreamFrame{StreamId: 1, Headers: http.Header{"A": {"b"}}}); err != nil {
		t.Fatal(err)
	}
	const conns, size = 16, 2 << 20
	var freed atomic.Int32
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for range conns {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		accepted := make(chan *Stream, 1)
		srvc := make(chan *Conn, 1)
		go func() {
			nc, err := ln.Accept()
			ln.Close() // not before: a listener closed first fails an Accept still to come
			if err != nil {
				close(srvc)
				return
			}
			srvc <- Serve(unvectored{nc}, func(s *Stream) error { accepted <- s; return nil }, Options{})
		}()
		nc, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		srv := <-srvc
		if srv == nil {
			t.Fatal("accept failed")
		}
		t.Cleanup(func() { nc.Close(); srv.Close(); <-srv.Done() })
		go io.Copy(io.Discard, nc) // the client reads everything
		if _, err := nc.Write(syn.Bytes()); err != nil {
			t.Fatal(err)
		}
		ss := <-accepted
		buf := make([]byte, size)
		runtime.AddCleanup(&buf[0], func(*atomic.Int32) { freed.Add(1) }, &freed)
		if _, err := ss.Write(buf); err != nil {
			t.Fatal(err)
		}
		if err := ss.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		ss.Reset()
	}
	// The buffers written are the callers' again, and dropped: nothing
	// may keep them.
	waitFor(t, "the written buffers to be collected", func() bool {
		runtime.GC()
		return freed.Load() == conns
	})
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	// A quiet connection costs its read buffer, its header inflater and
	// small change: about 150 KiB.
	if per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / conns; per > 512<<10 {
		t.Fatalf("a quiet connection holds %d KiB of heap, want at most 512", per>>10)
	}
}

// TestControlFramesWrittenInPiecesStayWhole: the answers to a flood of
// pings from a client that reads nothing meanwhile fill the socket's
// small buffers, and wait in the control queue while the reader goes on
// reading pings. Read at last, every answer is whole, once, in order. (It
// guarded answers written on the reader's goroutine while the writer was
// idle, an idea measured and not adopted: see the README.)
func TestControlFramesWrittenInPiecesStayWhole(t *testing.T) {
	server, client := socketPair(t)
	server.SetWriteBuffer(4096)
	client.SetReadBuffer(4096)
	srv := Serve(server, func(*Stream) error { return nil }, Options{})
	t.Cleanup(func() { client.Close(); srv.Close(); <-srv.Done() })
	f, err := spdyframe.NewFramer(client, client)
	if err != nil {
		t.Fatal(err)
	}
	const pings = 20000 // 240 KB of answers: far over the buffers, within maxQueuedControl
	wrote := make(chan error, 1)
	go func() {
		for i := range uint32(pings) {
			if err := f.WriteFrame(&spdyframe.PingFrame{Id: 2*i + 1}); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(frameWait):
		t.Fatalf("%d pings not sent within %v: the server stopped reading while its answers waited", pings, frameWait)
	}
	next := uint32(1)
	readUntil(t, f, client, fmt.Sprintf("the answers to %d pings, in order", pings), func(fr spdyframe.Frame) bool {
		switch fr := fr.(type) {
		case *spdyframe.PingFrame:
			if fr.Id != next {
				t.Fatalf("answer to PING %d, want %d", fr.Id, next)
			}
			next += 2
		case *spdyframe.SettingsFrame, *spdyframe.WindowUpdateFrame:
		default:
			t.Fatalf("%T among the answers, before PING %d's", fr, next)
		}
		return next == 2*pings+1
	})
}
