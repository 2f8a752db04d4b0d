// Stream ends, budgets and windows at their edges: each test here failed
// before the fix it names.
package spdy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	spdyframe "github.com/moby/spdystream/spdy"
)

// TestResetAfterQueuedFINEndsTheStream: the pump's pod→client half
// calls CloseWrite (pod EOF) while the writer is busy, so the FIN is
// queued; the client→pod half then fails (EPIPE) and the pump Resets the
// stream. The client must see the stream end (FIN or RST_STREAM); with the
// bug it sees neither and client-go's remote→local copy hangs forever.
func TestResetAfterQueuedFINEndsTheStream(t *testing.T) {
	got := make(chan *Stream, 2)
	f, nc, srv := rawClientWith(t, Options{}, func(s *Stream) { got <- s })
	go func() {
		f.WriteFrame(&spdyframe.SynStreamFrame{StreamId: 1, Headers: http.Header{"A": {"b"}}})
		f.WriteFrame(&spdyframe.SynStreamFrame{StreamId: 3, Headers: http.Header{"A": {"b"}}})
	}()
	// The writer is busy with stream 1 (the client does not read now).
	s3, wrote := busyWithStream1(t, f, nc, srv, got)
	closed := make(chan error, 1)
	go func() { closed <- s3.CloseWrite() }() // pod EOF: FIN queued
	waitFor(t, "stream 3's FIN to be queued", func() bool {
		srv.wmu.Lock()
		defer srv.wmu.Unlock()
		return slices.Contains(srv.active, s3)
	})
	s3.Reset() // the other half failed: abort
	t.Logf("CloseWrite returned %v", <-closed)

	// The client reads again: everything up to stream 1's data, then a
	// ping's echo (queued after anything stream 3 could still send).
	var ended bool
	n := 0
	pinged := false
	readUntil(t, f, nc, "stream 1's data, then the echo of PING 99", func(fr spdyframe.Frame) bool {
		switch fr := fr.(type) {
		case *spdyframe.DataFrame:
			if fr.StreamId == 3 && fr.Flags&spdyframe.DataFlagFin != 0 {
				ended = true
			}
			if fr.StreamId == 1 {
				n += len(fr.Data)
			}
		case *spdyframe.RstStreamFrame:
			if fr.StreamId == 3 {
				ended = true
			}
		case *spdyframe.PingFrame:
			if fr.Id == 99 {
				if !ended {
					t.Fatal("stream 3 got neither FIN nor RST_STREAM: the client never sees it end")
				}
				return true
			}
		}
		if n == busySize && !pinged {
			pinged = true
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
			go f.WriteFrame(&spdyframe.PingFrame{Id: 99})
		}
		return false
	})
}

// TestResetWakesReaderWaitingForConnBudget: the reader
// waits because the connection's streams hold ConnBuffer bytes; the
// consumer of one of them resets it, which frees half the budget. The
// reader should go on at once; with the bug it sleeps until StallTimeout
// and then resets another (innocent) stream.
func TestResetWakesReaderWaitingForConnBudget(t *testing.T) {
	srv, aS, _, cS, _ := connBudgetFull(t, 30*time.Second)
	aS.Reset() // frees 64 KiB of the connection's 128 KiB
	got := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := io.ReadFull(cS, b)
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("stream c's byte not delivered 5s after a reset freed the budget (buffered now %d of %d)", srv.buffered.Load(), 128<<10)
	}
}

// connBudgetFull opens streams a, b and c on a connection with 64 KiB
// stream and 128 KiB connection budgets: a and b hold 64 KiB each, unread,
// and c's one byte waits for the connection budget. It returns the
// server's side of the three streams and the limits hit.
func connBudgetFull(t *testing.T, stall time.Duration) (srv *Conn, a, b, c *Stream, limits *limitLog) {
	t.Helper()
	limits = &limitLog{}
	client, srv, accepted := pair(t, Options{StreamBuffer: 64 << 10, ConnBuffer: 128 << 10, StallTimeout: stall, OnLimit: limits.add})
	aC, a := open(t, client, accepted, "a")
	bC, b := open(t, client, accepted, "b")
	cC, c := open(t, client, accepted, "c")
	aC.Write(make([]byte, 64<<10))
	bC.Write(make([]byte, 64<<10))
	waitFor(t, "the connection budget to fill", func() bool { return srv.buffered.Load() >= 128<<10 })
	cC.Write([]byte("x"))
	waitFor(t, "the reader to wait for the connection budget", func() bool { return limits.has(LimitSessionBuffer) })
	return srv, a, b, c, limits
}

// TestSessionWindowReplenished: a client that honours SPDY/3.1
// session flow control (initial session window = ConnBuffer, as the
// server advertises) must get the session window back for bytes the
// server consumed; with the bug, bytes of streams that each stay below
// StreamBuffer/2 are never credited and the client stalls for good.
func TestSessionWindowReplenished(t *testing.T) {
	const streamBuf, connBuf = 64 << 10, 128 << 10
	const perStream, nStreams = 16 << 10, 32 // 512 KiB in all, 4 session windows
	eof := make(chan struct{}, nStreams)
	f, _, _ := rawClientWith(t, Options{StreamBuffer: streamBuf, ConnBuffer: connBuf}, func(s *Stream) {
		io.Copy(io.Discard, s)
		eof <- struct{}{}
		s.Reset()
	})
	frames := make(chan spdyframe.Frame, 1024)
	go func() {
		for {
			fr, err := f.ReadFrame()
			if err != nil {
				close(frames)
				return
			}
			frames <- fr
		}
	}()
	// The client: session window as advertised (64 KiB default + the
	// server's session WINDOW_UPDATE), stream windows ignored here.
	window := int64(64 << 10)
	credit := func(fr spdyframe.Frame) {
		if wu, ok := fr.(*spdyframe.WindowUpdateFrame); ok && wu.StreamId == 0 {
			window += int64(wu.DeltaWindowSize)
		}
	}
	sent := 0
	for i := range nStreams {
		id := spdyframe.StreamId(2*i + 1)
		if err := f.WriteFrame(&spdyframe.SynStreamFrame{StreamId: id, Headers: http.Header{"A": {"b"}}}); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(5 * time.Second)
		for window < perStream {
			select {
			case fr := <-frames:
				credit(fr)
			case <-deadline:
				t.Fatalf("stream %d: session window stuck at %d after %d bytes sent; the server consumed them all", id, window, sent)
			}
		}
		window -= perStream
		sent += perStream
		if err := f.WriteFrame(&spdyframe.DataFrame{StreamId: id, Flags: spdyframe.DataFlagFin, Data: make([]byte, perStream)}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-eof:
		case <-time.After(5 * time.Second):
			t.Fatal("server did not consume the stream")
		}
	}
}

// rawClientWith is rawClient with a chosen consumer.
func rawClientWith(t *testing.T, opts Options, consume func(*Stream)) (*spdyframe.Framer, net.Conn, *Conn) {
	t.Helper()
	a, b := net.Pipe()
	srv := Serve(b, func(s *Stream) error { go consume(s); return nil }, opts)
	t.Cleanup(func() { a.Close(); srv.Close(); <-srv.Done() })
	f, err := spdyframe.NewFramer(a, a)
	if err != nil {
		t.Fatal(err)
	}
	return f, a, srv
}

// TestFreedBudgetResetsNoStream: after a consumer's
// Reset frees the connection budget the reader was waiting for, the stall
// timer still fires and resets the fullest stream (b), though nothing is
// over budget any more.
func TestFreedBudgetResetsNoStream(t *testing.T) {
	_, aS, bS, cS, limits := connBudgetFull(t, time.Second)
	aS.Reset()
	if _, err := io.ReadFull(cS, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	// b held 64 KiB of a 128 KiB connection budget: within its own
	// budget and the connection's. It must still be readable.
	n, err := io.ReadFull(bS, make([]byte, 64<<10))
	if err != nil {
		t.Fatalf("stream b (within every budget) read %d bytes: %v; limits hit: %v", n, err, limits.snapshot())
	}
}

// TestDataAfterFINResetsTheStream: DATA on a stream the client already
// half-closed is answered with RST_STREAM STREAM_ALREADY_CLOSED, and the
// stream is over: a later Write fails, and no DATA follows the reset.
func TestDataAfterFINResetsTheStream(t *testing.T) {
	got := make(chan *Stream, 1)
	f, nc, _ := rawClientWith(t, Options{}, func(s *Stream) { got <- s })
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		f.WriteFrame(&spdyframe.SynStreamFrame{StreamId: 1, CFHeader: spdyframe.ControlFrameHeader{Flags: spdyframe.ControlFlagFin}, Headers: http.Header{"A": {"b"}}})
		f.WriteFrame(&spdyframe.DataFrame{StreamId: 1, Data: []byte("late")})
	}()
	s := <-got
	fr := readUntil(t, f, nc, "RST_STREAM 1", func(fr spdyframe.Frame) bool {
		r, ok := fr.(*spdyframe.RstStreamFrame)
		return ok && r.StreamId == 1
	})
	if r := fr.(*spdyframe.RstStreamFrame); r.Status != spdyframe.StreamAlreadyClosed {
		t.Fatalf("RST_STREAM status %d, want STREAM_ALREADY_CLOSED", r.Status)
	}
	werr := make(chan error, 1)
	go func() { _, err := s.Write([]byte("after reset")); werr <- err }()
	if err := <-werr; err == nil {
		t.Fatal("Write on a stream the server reset succeeded")
	}
	// The server resets the stream once it has read the DATA frame's
	// header; the framer writes the payload separately, and two frames
	// written at once would interleave on the pipe.
	<-wrote
	go f.WriteFrame(&spdyframe.PingFrame{Id: 7})
	readUntil(t, f, nc, "the echo of PING 7", func(fr spdyframe.Frame) bool {
		switch fr := fr.(type) {
		case *spdyframe.DataFrame:
			t.Fatalf("server sent DATA %q on stream %d after its RST_STREAM", fr.Data, fr.StreamId)
		case *spdyframe.PingFrame:
			return true // everything the server had queued came before the echo
		}
		return false
	})
}

// TestEmptyWriteReturns: Write of an empty slice when it cannot go
// direct (a non-vectored connection, e.g. the WebSocket tunnel or TLS)
// never returns, and the writer spins.
func TestEmptyWriteReturns(t *testing.T) {
	got := make(chan *Stream, 1)
	f, _, _ := rawClientWith(t, Options{}, func(s *Stream) { got <- s })
	go f.WriteFrame(&spdyframe.SynStreamFrame{StreamId: 1, Headers: http.Header{"A": {"b"}}})
	s := <-got
	go func() {
		for {
			if _, err := f.ReadFrame(); err != nil {
				return
			}
		}
	}()
	done := make(chan error, 1)
	go func() { _, err := s.Write(nil); done <- err }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Write(nil) did not return")
	}
}

// TestCloseDuringSynStreams: Close (another goroutine) reads c.lastID for the
// GOAWAY while the reader writes it without c.mu.
func TestCloseDuringSynStreams(t *testing.T) {
	f, _, srv := rawClientWith(t, Options{}, func(s *Stream) { s.Reset() })
	refused := make(chan struct{}, 100)
	go func() {
		for {
			fr, err := f.ReadFrame()
			if err != nil {
				return
			}
			if _, ok := fr.(*spdyframe.RstStreamFrame); ok {
				select {
				case refused <- struct{}{}:
				default:
				}
			}
		}
	}()
	go func() {
		for id := spdyframe.StreamId(1); ; id += 2 {
			// Over the per-field limit: the stream is refused right after
			// lastID is set, without taking c.mu.
			if err := f.WriteFrame(&spdyframe.SynStreamFrame{StreamId: id, Headers: http.Header{"A": {string(make([]byte, MaxHeaderField+1))}}}); err != nil {
				return
			}
		}
	}()
	for i := range 20 { // the reader is busy with the SYN_STREAM flood
		select {
		case <-refused:
		case <-time.After(frameWait):
			t.Fatalf("%d RST_STREAMs for the flood of refused SYN_STREAMs, then none for %v", i, frameWait)
		}
	}
	srv.Close()
	<-srv.Done()
}

// TestStallResetsAFinishedStreamNotTheConnection: two streams done both
// ways (our FIN, the client's FIN) whose consumers have not read their
// 64 KiB yet leave the connection's table but keep their bytes counted.
// When a third stream's DATA then waits for the connection budget and the
// stall timer fires, resetFullest finds nothing to reset and the whole
// connection ends with GOAWAY INTERNAL_ERROR, instead of one stream being
// reset and the others going on.
func TestStallResetsAFinishedStreamNotTheConnection(t *testing.T) {
	client, srv, accepted := pair(t, Options{StreamBuffer: 64 << 10, ConnBuffer: 128 << 10, StallTimeout: 300 * time.Millisecond})
	for _, name := range []string{"a", "b"} {
		cs, ss := open(t, client, accepted, name)
		if err := ss.CloseWrite(); err != nil { // the pod's EOF went out
			t.Fatal(err)
		}
		cs.Write(make([]byte, 64<<10)) // not read yet by the slow pod
		cs.Close()
	}
	waitFor(t, "the finished streams to fill the budget", func() bool { return srv.buffered.Load() >= 128<<10 })
	cC, cS := open(t, client, accepted, "c")
	cC.Write([]byte("x"))
	got := make(chan error, 1)
	go func() { _, err := io.ReadFull(cS, make([]byte, 1)); got <- err }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("stream c: %v; connection: %v", err, func() error {
				select {
				case <-srv.Done():
					return srv.Err()
				default:
					return nil
				}
			}())
		}
	case <-srv.Done():
		t.Fatalf("the connection ended: %v", srv.Err())
	case <-time.After(5 * time.Second):
		t.Fatal("stream c's byte not delivered")
	}
}

// socketClient is rawClientWith over a real socket pair.
func socketClient(t *testing.T, opts Options, consume func(*Stream)) (*spdyframe.Framer, *net.UnixConn, *Conn) {
	t.Helper()
	server, client := socketPair(t)
	srv := Serve(server, func(s *Stream) error { go consume(s); return nil }, opts)
	t.Cleanup(func() { client.Close(); srv.Close(); <-srv.Done() })
	f, err := spdyframe.NewFramer(client, client)
	if err != nil {
		t.Fatal(err)
	}
	return f, client, srv
}

// TestDuplicateSynStreamEndsTheOpenStream: a second SYN_STREAM for an
// open stream is answered with RST_STREAM PROTOCOL_ERROR on that id,
// which ends the client's stream (spdystream drops it); the server's side
// of the stream must end too. With the bug it stayed open: its forward
// held the pod connection for a stream the client had dropped.
func TestDuplicateSynStreamEndsTheOpenStream(t *testing.T) {
	got := make(chan *Stream, 2)
	f, nc, _ := socketClient(t, Options{}, func(s *Stream) { got <- s })
	wrote := make(chan error, 1)
	go func() {
		wrote <- f.WriteFrame(&spdyframe.SynStreamFrame{StreamId: 1, Headers: http.Header{"A": {"b"}}})
	}()
	var s *Stream
	select {
	case s = <-got:
	case <-time.After(frameWait):
		t.Fatalf("stream 1 not accepted within %v", frameWait)
	}
	if err := <-wrote; err != nil { // the framer is not safe for concurrent writes
		t.Fatal(err)
	}
	go f.WriteFrame(&spdyframe.SynStreamFrame{StreamId: 1, Headers: http.Header{"A": {"again"}}})
	fr := readUntil(t, f, nc, "RST_STREAM 1 PROTOCOL_ERROR for the duplicate SYN_STREAM", func(fr spdyframe.Frame) bool {
		_, ok := fr.(*spdyframe.RstStreamFrame)
		return ok
	})
	if r := fr.(*spdyframe.RstStreamFrame); r.StreamId != 1 || r.Status != spdyframe.ProtocolError {
		t.Fatalf("RST_STREAM for stream %d status %d, want stream 1 PROTOCOL_ERROR", r.StreamId, r.Status)
	}
	select {
	case <-s.Aborted():
	case <-time.After(5 * time.Second):
		t.Fatal("stream 1 still open on the server 5s after its RST_STREAM")
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
		t.Fatalf("read on stream 1 after its RST_STREAM: %v, want ErrReset", err)
	}
	select {
	case s2 := <-got:
		t.Fatalf("the duplicate SYN_STREAM was accepted as stream %d", s2.ID())
	default:
	}
}

// TestEndedConnectionLeavesTheSharedBudget: a connection that ends
// leaves the holders of its shared Budget, so the daemon does not keep
// every connection it ever served (and Reclaim does not ask them all).
// Kills the reader not calling Leave.
func TestEndedConnectionLeavesTheSharedBudget(t *testing.T) {
	budget := NewBudget(1 << 20)
	holders := func() int {
		budget.mu.Lock()
		defer budget.mu.Unlock()
		return len(budget.holders)
	}
	p := newWirePeer(t, Options{Global: budget}, func(*Stream) error { return nil })
	p.send(syn(1, false), &spdyframe.DataFrame{StreamId: 1, Data: []byte("held")})
	p.barrier()
	if n := holders(); n != 1 {
		t.Fatalf("the budget has %d holders while the connection runs, want 1", n)
	}
	p.nc.Close()
	<-p.srv.Done()
	if n, used := holders(), budget.Used(); n != 0 || used != 0 {
		t.Fatalf("after the connection ended the budget has %d holders and %d bytes used, want none", n, used)
	}
}

// TestControlFramesQueuedDuringADirectWriteGoOut: a control frame (here
// a PING's echo) queued while a stream's Write goes direct, the writer
// idle, is sent once that write is done: the writer, woken while the
// write held the connection, went back to wait, and the write's end must
// wake it again. Kills the direct write not waking the writer, which
// left the echo (or a SYN_REPLY, a WINDOW_UPDATE) queued until
// something else woke it.
func TestControlFramesQueuedDuringADirectWriteGoOut(t *testing.T) {
	const size = 4 << 20 // over the socket pair's buffers: the write waits for the client
	got := make(chan *Stream, 1)
	f, nc, srv := socketClient(t, Options{MaxFrame: size}, func(s *Stream) { got <- s })
	if err := f.WriteFrame(syn(1, false)); err != nil {
		t.Fatal(err)
	}
	readUntil(t, f, nc, "SYN_REPLY 1", func(fr spdyframe.Frame) bool {
		r, ok := fr.(*spdyframe.SynReplyFrame)
		return ok && r.StreamId == 1
	})
	s := <-got
	wrote := make(chan error, 1)
	go func() { _, err := s.Write(make([]byte, size)); wrote <- err }()
	waitFor(t, "stream 1's write to go direct and wait for the client", func() bool {
		srv.wmu.Lock()
		defer srv.wmu.Unlock()
		return srv.writing && len(srv.active) == 0 && len(wrote) == 0
	})
	if err := f.WriteFrame(&spdyframe.PingFrame{Id: 7}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the echo of PING 7 to be queued", func() bool {
		srv.wmu.Lock()
		defer srv.wmu.Unlock()
		return len(srv.ctrl) > 0
	})
	n := 0
	readUntil(t, f, nc, "stream 1's data, then the echo of PING 7", func(fr spdyframe.Frame) bool {
		if d, ok := fr.(*spdyframe.DataFrame); ok && d.StreamId == 1 {
			n += len(d.Data)
		}
		pf, ok := fr.(*spdyframe.PingFrame)
		return ok && pf.Id == 7
	})
	if n != size {
		t.Fatalf("the echo came after %d bytes of stream 1's data, want all %d (the write held the connection)", n, size)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// busySize is what busyWithStream1 writes on stream 1.
const busySize = 1 << 20

// busyWithStream1 takes streams 1 and 3 from got, reads their
// SYN_REPLYs, and starts a write of busySize bytes on stream 1 that the
// writer is busy with while the client reads nothing; it returns stream 3
// and the channel the write's error comes on.
func busyWithStream1(t *testing.T, f *spdyframe.Framer, nc net.Conn, srv *Conn, got <-chan *Stream) (s3 *Stream, wrote <-chan error) {
	t.Helper()
	s1, s3 := <-got, <-got
	if s1.ID() != 1 {
		s1, s3 = s3, s1
	}
	replies := 0
	readUntil(t, f, nc, "the SYN_REPLYs of streams 1 and 3", func(fr spdyframe.Frame) bool {
		if _, ok := fr.(*spdyframe.SynReplyFrame); ok {
			replies++
		}
		return replies == 2
	})
	w := make(chan error, 1)
	go func() { _, err := s1.Write(make([]byte, busySize)); w <- err }()
	waitFor(t, "the writer to be busy with stream 1", func() bool {
		srv.wmu.Lock()
		defer srv.wmu.Unlock()
		return srv.writing && s1.inflight
	})
	return s3, w
}

// TestResetAfterWrittenFINSendsNothing: a stream whose FIN the writer
// has sent (its CloseWrite queued behind another stream's data) is
// released by Reset without RST_STREAM, as the Reset doc says: the
// client, which may still be sending on its half, must not see its
// stream cancelled. Kills the writer not recording the FIN it wrote.
func TestResetAfterWrittenFINSendsNothing(t *testing.T) {
	got := make(chan *Stream, 2)
	f, nc, srv := socketClient(t, Options{}, func(s *Stream) { got <- s })
	if err := f.WriteFrame(syn(1, false)); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFrame(syn(3, false)); err != nil {
		t.Fatal(err)
	}
	// The writer is busy with stream 1 (the client does not read now), so
	// stream 3's FIN is queued: the writer sends it.
	s3, wrote := busyWithStream1(t, f, nc, srv, got)
	closed := make(chan error, 1)
	go func() { closed <- s3.CloseWrite() }()
	waitFor(t, "stream 3's FIN to be queued", func() bool {
		srv.wmu.Lock()
		defer srv.wmu.Unlock()
		return slices.Contains(srv.active, s3)
	})
	n, fin := 0, false
	readUntil(t, f, nc, "stream 1's data and stream 3's FIN", func(fr spdyframe.Frame) bool {
		if d, ok := fr.(*spdyframe.DataFrame); ok {
			if d.StreamId == 1 {
				n += len(d.Data)
			}
			if d.StreamId == 3 && d.Flags&spdyframe.DataFlagFin != 0 {
				fin = true
			}
		}
		return n == busySize && fin
	})
	if err := <-closed; err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	s3.Reset()
	go f.WriteFrame(&spdyframe.PingFrame{Id: 99})
	readUntil(t, f, nc, "the echo of PING 99", func(fr spdyframe.Frame) bool {
		if r, ok := fr.(*spdyframe.RstStreamFrame); ok && r.StreamId == 3 {
			t.Fatalf("RST_STREAM 3 status %d after its FIN was written", r.Status)
		}
		pf, ok := fr.(*spdyframe.PingFrame)
		return ok && pf.Id == 99
	})
}

// TestNothingOvertakesTheSynReply: a stream's consumer that writes or
// resets it at once, from accept, does not get a frame out before the
// stream's SYN_REPLY (the package doc): a client gets DATA or RST_STREAM
// for a stream it has no reply for. accept gives each its time: with the
// reply correctly waited for, the write and the reset cannot return
// within it. Kills Write and Reset not waiting for the SYN_REPLY.
func TestNothingOvertakesTheSynReply(t *testing.T) {
	const grace = 100 * time.Millisecond
	p := newWirePeer(t, Options{}, func(s *Stream) error {
		done := make(chan struct{})
		go func() {
			if s.ID() == 1 {
				s.Write([]byte("early"))
			} else {
				s.Reset()
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(grace):
		}
		return nil
	})
	p.send(syn(1, false), syn(3, false))
	replied := map[spdyframe.StreamId]bool{}
	seen := map[spdyframe.StreamId]bool{}
	p.collect(func(fr spdyframe.Frame) bool {
		var id spdyframe.StreamId
		switch fr := fr.(type) {
		case *spdyframe.SynReplyFrame:
			replied[fr.StreamId] = true
			return false
		case *spdyframe.DataFrame:
			id = fr.StreamId
		case *spdyframe.RstStreamFrame:
			id = fr.StreamId
		default:
			return false
		}
		if !replied[id] {
			t.Fatalf("%s for stream %d before its SYN_REPLY", describe([]spdyframe.Frame{fr}), id)
		}
		seen[id] = true
		return seen[1] && seen[3]
	}, "stream 1's DATA and stream 3's RST_STREAM")
}
