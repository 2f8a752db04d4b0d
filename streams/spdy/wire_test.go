// What a peer sees on the wire for the rules the package doc promises:
// each test here was written against a mutation of the engine that the
// other tests let through (the review of the package's tests).
package spdy

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/spdystream"
	spdyframe "github.com/moby/spdystream/spdy"
)

// wirePeer is a client written with spdystream's framer over a unix
// socket pair: what it sends, and the frames the server answers with.
type wirePeer struct {
	t      *testing.T
	f      *spdyframe.Framer
	nc     *net.UnixConn
	srv    *Conn
	frames chan spdyframe.Frame // closed when the server's side ends
	pings  uint32               // the last ping id used as a barrier
}

// newWirePeer serves a socket pair with accept and reads the server's
// frames on a goroutine of its own.
func newWirePeer(t *testing.T, opts Options, accept func(*Stream) error) *wirePeer {
	t.Helper()
	server, client := socketPair(t)
	srv := Serve(server, accept, opts)
	t.Cleanup(func() { client.Close(); srv.Close(); <-srv.Done() })
	f, err := spdyframe.NewFramer(client, client)
	if err != nil {
		t.Fatal(err)
	}
	p := &wirePeer{t: t, f: f, nc: client, srv: srv, frames: make(chan spdyframe.Frame, 4096)}
	go func() {
		defer close(p.frames)
		for {
			fr, err := f.ReadFrame()
			if err != nil {
				return
			}
			p.frames <- fr
		}
	}()
	return p
}

// send writes frames in order; one goroutine at a time may send.
func (p *wirePeer) send(frames ...spdyframe.Frame) {
	p.t.Helper()
	for _, fr := range frames {
		if err := p.f.WriteFrame(fr); err != nil {
			p.t.Fatalf("write %T: %v", fr, err)
		}
	}
}

// raw writes bytes as they are.
func (p *wirePeer) raw(b []byte) {
	p.t.Helper()
	if _, err := p.nc.Write(b); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

// barrier sends a PING with a fresh odd id and returns every frame the
// server sent before its echo: the server reads frames in order and
// queues its control frames in order, so they include every answer to
// what was sent before the PING.
func (p *wirePeer) barrier() []spdyframe.Frame {
	p.t.Helper()
	p.pings += 2
	id := p.pings + 1001
	p.send(&spdyframe.PingFrame{Id: id})
	return p.collect(func(fr spdyframe.Frame) bool {
		pf, ok := fr.(*spdyframe.PingFrame)
		return ok && pf.Id == id
	}, fmt.Sprintf("the echo of PING %d", id))
}

// collect returns the frames before the first that match accepts, failing
// if none comes within 10 s or the connection ends first.
func (p *wirePeer) collect(match func(spdyframe.Frame) bool, what string) []spdyframe.Frame {
	p.t.Helper()
	var before []spdyframe.Frame
	deadline := time.After(10 * time.Second)
	for {
		select {
		case fr, ok := <-p.frames:
			if !ok {
				p.t.Fatalf("the connection ended before %s; frames before: %s", what, describe(before))
			}
			if match(fr) {
				return before
			}
			before = append(before, fr)
		case <-deadline:
			p.t.Fatalf("no %s within 10s; frames before: %s", what, describe(before))
		}
	}
}

func describe(frames []spdyframe.Frame) string {
	s := ""
	for _, fr := range frames {
		switch fr := fr.(type) {
		case *spdyframe.RstStreamFrame:
			s += fmt.Sprintf("[RST_STREAM %d %d]", fr.StreamId, fr.Status)
		case *spdyframe.GoAwayFrame:
			s += fmt.Sprintf("[GOAWAY %d %d]", fr.LastGoodStreamId, fr.Status)
		case *spdyframe.PingFrame:
			s += fmt.Sprintf("[PING %d]", fr.Id)
		case *spdyframe.WindowUpdateFrame:
			s += fmt.Sprintf("[WINDOW_UPDATE %d %d]", fr.StreamId, fr.DeltaWindowSize)
		case *spdyframe.SynReplyFrame:
			s += fmt.Sprintf("[SYN_REPLY %d]", fr.StreamId)
		case *spdyframe.DataFrame:
			s += fmt.Sprintf("[DATA %d len %d flags %d]", fr.StreamId, len(fr.Data), fr.Flags)
		default:
			s += fmt.Sprintf("[%T]", fr)
		}
	}
	return s
}

// rsts returns the RST_STREAM frames among frames.
func rsts(frames []spdyframe.Frame) []*spdyframe.RstStreamFrame {
	var out []*spdyframe.RstStreamFrame
	for _, fr := range frames {
		if r, ok := fr.(*spdyframe.RstStreamFrame); ok {
			out = append(out, r)
		}
	}
	return out
}

// sessionCredit sums the session WINDOW_UPDATEs among frames.
func sessionCredit(frames []spdyframe.Frame) int {
	n := 0
	for _, fr := range frames {
		if w, ok := fr.(*spdyframe.WindowUpdateFrame); ok && w.StreamId == 0 {
			n += int(w.DeltaWindowSize)
		}
	}
	return n
}

func syn(id uint32, fin bool) *spdyframe.SynStreamFrame {
	fr := &spdyframe.SynStreamFrame{StreamId: spdyframe.StreamId(id), Headers: http.Header{"A": {"b"}}}
	if fin {
		fr.CFHeader.Flags = spdyframe.ControlFlagFin
	}
	return fr
}

// controlFrame is a control frame of type typ with a payload of n zero
// bytes.
func controlFrame(typ uint16, n int) []byte {
	b := appendControlHeader(nil, typ, 0, n)
	return append(b, make([]byte, n)...)
}

// TestControlFrameOfMaxSizeIsRead: a control frame of exactly
// MaxControlFrame bytes is read (an unknown type: ignored, SPDY/3
// §2.2.1) and the connection goes on; one byte more ends it with GOAWAY
// PROTOCOL_ERROR. Kills "h.length >= MaxControlFrame".
func TestControlFrameOfMaxSizeIsRead(t *testing.T) {
	p := newWirePeer(t, Options{}, func(*Stream) error { return nil })
	p.raw(controlFrame(100, MaxControlFrame))
	for _, fr := range p.barrier() {
		if g, ok := fr.(*spdyframe.GoAwayFrame); ok {
			t.Fatalf("GOAWAY %d for a control frame of MaxControlFrame bytes", g.Status)
		}
	}
	p.raw(controlFrame(100, MaxControlFrame+1))
	p.collect(func(fr spdyframe.Frame) bool {
		g, ok := fr.(*spdyframe.GoAwayFrame)
		return ok && g.Status == spdyframe.GoAwayProtocolError
	}, "GOAWAY PROTOCOL_ERROR for a control frame of MaxControlFrame+1 bytes")
}

// TestEvenPingsAreNotAnswered: a PING with an even id would be the
// server's own (SPDY/3 §2.6.5): the server does not echo it, or two
// peers that each echo what is not theirs would ping-pong for good.
// Kills answering every ping id.
func TestEvenPingsAreNotAnswered(t *testing.T) {
	p := newWirePeer(t, Options{}, func(*Stream) error { return nil })
	p.send(&spdyframe.PingFrame{Id: 2}, &spdyframe.PingFrame{Id: 4})
	for _, fr := range p.barrier() {
		if pf, ok := fr.(*spdyframe.PingFrame); ok {
			t.Fatalf("the server echoed PING %d, an even id", pf.Id)
		}
	}
}

// TestStreamRefusals: each way the server refuses a new stream, as the
// client reads it: REFUSED_STREAM (not processed: the client may open it
// again) past MaxStreams and after the client's GOAWAY, CANCEL when
// accept refuses it, PROTOCOL_ERROR for a header block over a limit; the
// stream is never offered to accept after a GOAWAY, and OnRefuse hears
// of each refusal the connection makes itself. Kills swapping
// REFUSED_STREAM and CANCEL, ignoring the client's GOAWAY, and not
// calling OnRefuse past MaxStreams.
func TestStreamRefusals(t *testing.T) {
	type refusal struct {
		id  uint32
		err error
	}
	cases := []struct {
		name    string
		opts    Options
		accept  func(s *Stream) error
		frames  []spdyframe.Frame
		id      uint32 // the stream refused
		status  spdyframe.RstStreamStatus
		refused bool // OnRefuse is told
	}{
		{"past MaxStreams", Options{MaxStreams: 1}, nil,
			[]spdyframe.Frame{syn(1, false), syn(3, false)}, 3, spdyframe.RefusedStream, true},
		{"after the client's GOAWAY", Options{}, nil,
			[]spdyframe.Frame{syn(1, false), &spdyframe.GoAwayFrame{LastGoodStreamId: 0}, syn(3, false)}, 3, spdyframe.RefusedStream, true},
		{"by accept", Options{}, func(s *Stream) error {
			if s.ID() == 3 {
				return errors.New("no")
			}
			return nil
		}, []spdyframe.Frame{syn(1, false), syn(3, false)}, 3, spdyframe.Cancel, false},
		{"header over its limit", Options{}, nil,
			[]spdyframe.Frame{syn(1, false), &spdyframe.SynStreamFrame{StreamId: 3, Headers: http.Header{"A": {string(make([]byte, MaxHeaderField+1))}}}},
			3, spdyframe.ProtocolError, true},
		{"more than MaxHeaders headers", Options{}, nil,
			[]spdyframe.Frame{syn(1, false), &spdyframe.SynStreamFrame{StreamId: 3, Headers: manyHeaders(MaxHeaders + 1)}},
			3, spdyframe.ProtocolError, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			refusals := make(chan refusal, 10)
			accepted := make(chan uint32, 10)
			opts := tc.opts
			opts.OnRefuse = func(id uint32, err error) { refusals <- refusal{id, err} }
			p := newWirePeer(t, opts, func(s *Stream) error {
				if tc.accept != nil {
					if err := tc.accept(s); err != nil {
						return err
					}
				}
				accepted <- s.ID()
				return nil
			})
			p.send(tc.frames...)
			frames := p.barrier()
			var got []string
			found := false
			for _, r := range rsts(frames) {
				got = append(got, fmt.Sprintf("stream %d status %d", r.StreamId, r.Status))
				if uint32(r.StreamId) == tc.id {
					found = r.Status == tc.status
				}
			}
			if !found {
				t.Fatalf("RST_STREAMs %v, want stream %d status %d; frames: %s", got, tc.id, tc.status, describe(frames))
			}
			for _, fr := range frames {
				if r, ok := fr.(*spdyframe.SynReplyFrame); ok && uint32(r.StreamId) == tc.id {
					t.Fatalf("the refused stream %d got a SYN_REPLY", tc.id)
				}
			}
			// accept ran, on the reader, before the barrier's PING was read.
			for len(accepted) > 0 {
				if id := <-accepted; id == tc.id && tc.accept == nil {
					t.Fatalf("stream %d was offered to accept", id)
				}
			}
			select {
			case r := <-refusals:
				if !tc.refused {
					t.Fatalf("OnRefuse(%d, %v) for a stream accept refused", r.id, r.err)
				}
				if r.id != tc.id {
					t.Fatalf("OnRefuse for stream %d, want %d", r.id, tc.id)
				}
			default:
				if tc.refused {
					t.Fatal("OnRefuse not called")
				}
			}
		})
	}
}

// TestMaxHeadersAreAccepted: a stream with exactly MaxHeaders headers, the
// limit, is accepted with all of them. Kills a limit off by one the other
// way (the MaxHeaders+1 case of TestStreamRefusals kills "i > MaxHeaders").
func TestMaxHeadersAreAccepted(t *testing.T) {
	got := make(chan http.Header, 1)
	p := newWirePeer(t, Options{}, func(s *Stream) error { got <- s.Headers(); return nil })
	p.send(&spdyframe.SynStreamFrame{StreamId: 1, Headers: manyHeaders(MaxHeaders)})
	p.collect(func(fr spdyframe.Frame) bool {
		r, ok := fr.(*spdyframe.SynReplyFrame)
		return ok && r.StreamId == 1
	}, "SYN_REPLY for a stream of MaxHeaders headers")
	if h := <-got; len(h) != MaxHeaders {
		t.Fatalf("accepted with %d headers, want %d", len(h), MaxHeaders)
	}
}

// TestDataOnUnopenedStreamIsInvalid: DATA on a stream the client never
// opened gets RST_STREAM INVALID_STREAM; DATA still in flight on a
// stream the server reset (Stream.Reset: CANCEL) gets nothing, it is
// dropped. Kills dropping the INVALID_STREAM reset, and Stream.Reset
// sending another status than CANCEL.
func TestDataOnUnopenedStreamIsInvalid(t *testing.T) {
	p := newWirePeer(t, Options{}, func(s *Stream) error {
		go s.Reset()
		return nil
	})
	p.send(syn(1, false))
	p.collect(func(fr spdyframe.Frame) bool {
		r, ok := fr.(*spdyframe.RstStreamFrame)
		return ok && r.StreamId == 1 && r.Status == spdyframe.Cancel
	}, "RST_STREAM CANCEL for stream 1, which the server reset")
	p.send(&spdyframe.DataFrame{StreamId: 1, Data: []byte("in flight")}, &spdyframe.DataFrame{StreamId: 5, Data: []byte("never opened")})
	var got []string
	for _, r := range rsts(p.barrier()) {
		got = append(got, fmt.Sprintf("stream %d status %d", r.StreamId, r.Status))
	}
	if want := "[stream 5 status 2]"; fmt.Sprint(got) != want {
		t.Fatalf("RST_STREAMs %v, want %s (INVALID_STREAM for stream 5 only)", got, want)
	}
}

// TestSettingsWithMoreEntriesThanItsLengthEndsTheConnection: a SETTINGS
// frame whose entry count its length does not hold is a protocol error
// (the package doc): GOAWAY PROTOCOL_ERROR. Kills dropping the check.
func TestSettingsWithMoreEntriesThanItsLengthEndsTheConnection(t *testing.T) {
	p := newWirePeer(t, Options{}, func(*Stream) error { return nil })
	b := appendControlHeader(nil, typeSettings, 0, 12)
	b = binary.BigEndian.AppendUint32(b, 2) // two entries, one sent
	b = binary.BigEndian.AppendUint32(b, settingsInitialWindowSize)
	b = binary.BigEndian.AppendUint32(b, 1<<20)
	p.raw(b)
	p.collect(func(fr spdyframe.Frame) bool {
		g, ok := fr.(*spdyframe.GoAwayFrame)
		return ok && g.Status == spdyframe.GoAwayProtocolError
	}, "GOAWAY PROTOCOL_ERROR for a SETTINGS of 2 entries in 12 bytes")
	select {
	case <-p.srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not end")
	}
	var ce *connError
	if !errors.As(p.srv.Err(), &ce) {
		t.Fatalf("connection ended with %v, want a protocol error", p.srv.Err())
	}
}

// TestGoAwayNamesTheLastStream: the GOAWAY of Close names the last
// stream the client opened, so the client knows which of its streams
// the server saw. A GOAWAY naming stream 0 fails it, as it fails
// FuzzControlFrames' seeds, which look at the GOAWAY at the client's
// EOF only.
func TestGoAwayNamesTheLastStream(t *testing.T) {
	p := newWirePeer(t, Options{}, func(*Stream) error { return nil })
	p.send(syn(1, false), syn(3, false), syn(7, false))
	p.barrier()
	go p.srv.Close()
	p.collect(func(fr spdyframe.Frame) bool {
		g, ok := fr.(*spdyframe.GoAwayFrame)
		if ok && (g.LastGoodStreamId != 7 || g.Status != spdyframe.GoAwayOK) {
			t.Fatalf("GOAWAY last good stream %d status %d, want 7 OK", g.LastGoodStreamId, g.Status)
		}
		return ok
	}, "GOAWAY")
}

// TestSessionWindowCreditsBytesNobodyReads: every byte the client sends
// goes back to its session window, whether a consumer reads it, the
// reader drops it on arrival (DATA for a stream not open), or a reset
// drops it from a buffer (the client's RST_STREAM): a client that honours
// SPDY/3.1 flow control would otherwise lose that window for good. The
// WINDOW_UPDATE goes out as soon as half the connection's budget is
// owed. Kills not crediting discarded DATA, not crediting bytes a peer's
// reset drops, and crediting only a whole budget at once.
func TestSessionWindowCreditsBytesNobodyReads(t *testing.T) {
	const connBuf = 256 << 10
	const half = connBuf / 2
	cases := []struct {
		name string
		run  func(p *wirePeer, streams <-chan *Stream)
	}{
		{"read", func(p *wirePeer, streams <-chan *Stream) {
			p.send(syn(1, false), &spdyframe.DataFrame{StreamId: 1, Data: make([]byte, half)})
			s := <-streams
			if _, err := io.ReadFull(s, make([]byte, half)); err != nil {
				p.t.Fatal(err)
			}
		}},
		{"dropped on arrival", func(p *wirePeer, _ <-chan *Stream) {
			p.send(&spdyframe.DataFrame{StreamId: 1, Data: make([]byte, half)})
		}},
		{"dropped by the client's reset", func(p *wirePeer, streams <-chan *Stream) {
			p.send(syn(1, false), &spdyframe.DataFrame{StreamId: 1, Data: make([]byte, half)})
			s := <-streams
			p.barrier() // the DATA is in the stream's buffer
			if n := s.in.Buffered(); n != half {
				p.t.Fatalf("stream 1 holds %d bytes, want %d", n, half)
			}
			p.send(&spdyframe.RstStreamFrame{StreamId: 1, Status: spdyframe.Cancel})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			streams := make(chan *Stream, 1)
			p := newWirePeer(t, Options{StreamBuffer: connBuf, ConnBuffer: connBuf}, func(s *Stream) error {
				streams <- s
				return nil
			})
			// Serve's first session WINDOW_UPDATE raises the window from
			// SPDY/3.1's 64 KiB to the budget: not a credit.
			p.collect(func(fr spdyframe.Frame) bool {
				w, ok := fr.(*spdyframe.WindowUpdateFrame)
				if ok && (w.StreamId != 0 || w.DeltaWindowSize != connBuf-64<<10) {
					t.Fatalf("first WINDOW_UPDATE stream %d delta %d, want the session's %d", w.StreamId, w.DeltaWindowSize, connBuf-64<<10)
				}
				return ok
			}, "the session WINDOW_UPDATE announcing the budget")
			tc.run(p, streams)
			credit := 0
			p.collect(func(fr spdyframe.Frame) bool {
				credit += sessionCredit([]spdyframe.Frame{fr})
				return credit >= half
			}, fmt.Sprintf("session WINDOW_UPDATEs for the %d bytes sent (have %d)", half, credit))
		})
	}
}

// TestTrafficOneWayKeepsTheConnection: the idle timeout counts frames
// either way, so a connection carrying only uploads (the client's DATA,
// which the server does not answer) or only downloads (the server's
// DATA, written direct or by the writer, which a spdystream client never
// answers) for three idle timeouts stays open. Kills dropping the
// reader's or the writer's record of activity.
func TestTrafficOneWayKeepsTheConnection(t *testing.T) {
	const idle = time.Second
	for _, tc := range []struct {
		name     string
		up       bool
		maxFrame int
		size     int // bytes each tick
	}{
		{"upload", true, 0, 1},
		{"download direct", false, 0, 1},
		{"download queued", false, 1 << 10, 2 << 10}, // over MaxFrame: the writer sends it
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			streams := make(chan *Stream, 1)
			p := newWirePeer(t, Options{IdleTimeout: idle, MaxFrame: tc.maxFrame}, func(s *Stream) error {
				streams <- s
				return nil
			})
			p.send(syn(1, false))
			s := <-streams
			buf := make([]byte, tc.size)
			tick := time.NewTicker(idle / 10)
			defer tick.Stop()
			for end := time.Now().Add(3 * idle); time.Now().Before(end); <-tick.C {
				if tc.up {
					p.send(&spdyframe.DataFrame{StreamId: 1, Data: buf})
					if _, err := io.ReadFull(s, buf); err != nil {
						t.Fatalf("server read: %v (connection: %v)", err, connErr(p.srv))
					}
					continue
				}
				if _, err := s.Write(buf); err != nil {
					t.Fatalf("server write: %v (connection: %v)", err, connErr(p.srv))
				}
				got := 0
				p.collect(func(fr spdyframe.Frame) bool {
					if d, ok := fr.(*spdyframe.DataFrame); ok && d.StreamId == 1 {
						got += len(d.Data)
					}
					return got == tc.size
				}, "the server's DATA")
			}
			select {
			case <-p.srv.Done():
				t.Fatalf("the connection ended while bytes moved: %v", p.srv.Err())
			default:
			}
		})
	}
}

// connErr is why c ended, or nil while it runs.
func connErr(c *Conn) error {
	select {
	case <-c.Done():
		return c.Err()
	default:
		return nil
	}
}

// TestReclaimResetsTheFullestStaleStream: of the stale streams of every
// connection sharing a budget, Reclaim resets the one holding the most,
// and only it: the fullest of one connection's, and the fuller of two
// connections' fullest. Kills picking the least full, in FullestStale or
// in Reclaim.
func TestReclaimResetsTheFullestStaleStream(t *testing.T) {
	const stall = 50 * time.Millisecond
	budget := NewBudget(1 << 20)
	opts := Options{StallTimeout: stall, Global: budget}
	clientA, srvA, acceptedA := pair(t, opts)
	clientB, srvB, acceptedB := pair(t, opts)
	type held struct {
		name string
		s    *Stream
		n    int
	}
	var all []held
	for _, h := range []struct {
		name     string
		client   *spdystream.Connection
		accepted chan *Stream
		n        int
	}{{"a1", clientA, acceptedA, 1000}, {"a2", clientA, acceptedA, 3000}, {"b1", clientB, acceptedB, 2000}} {
		cs, ss := open(t, h.client, h.accepted, h.name)
		if _, err := cs.Write(make([]byte, h.n)); err != nil {
			t.Fatal(err)
		}
		all = append(all, held{h.name, ss, h.n})
	}
	for _, h := range all {
		waitFor(t, h.name+" to hold its bytes and go stale", func() bool {
			idle := time.Since(processStart) - time.Duration(h.s.lastUse.Load())
			return h.s.in.Buffered() == h.n && idle >= stall
		})
	}
	if n, _ := srvA.FullestStale(); n != 3000 {
		t.Fatalf("connection a's fullest stale stream holds %d, want a2's 3000", n)
	}
	if n, _ := srvB.FullestStale(); n != 2000 {
		t.Fatalf("connection b's fullest stale stream holds %d, want b1's 2000", n)
	}
	if !budget.Reclaim() {
		t.Fatal("Reclaim reset nothing")
	}
	for _, h := range all {
		aborted := h.s.AbortErr() != nil
		if aborted != (h.name == "a2") {
			t.Fatalf("after Reclaim, %s (%d bytes) aborted %v; want only a2, the fullest, reset", h.name, h.n, aborted)
		}
	}
}

// tcpFramer serves a loopback TCP connection (whose streams can splice)
// with accept, and returns spdystream's framer on the client's side and
// the client's connection.
func tcpFramer(t *testing.T, opts Options, accept func(*Stream) error) (*spdyframe.Framer, net.Conn, *Conn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvc := make(chan *Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(srvc)
			return
		}
		srvc <- Serve(nc, accept, opts)
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
	f, err := spdyframe.NewFramer(nc, nc)
	if err != nil {
		t.Fatal(err)
	}
	return f, nc, srv
}

// TestWriterSharesTheConnectionFairly: three streams with bulk writes
// queued get the same share of the connection: each batch of the writer
// takes a frame from each in turn, and the next batch starts with the
// next stream, so the batch's last frames (a batch holds 8 frames of
// 128 KiB) do not always go to the same streams. Kills dropping the
// rotation, which gave the third stream 2 frames of every 8 and the
// others 3.
func TestWriterSharesTheConnectionFairly(t *testing.T) {
	streams := make(chan *Stream, 3)
	f, nc, srv := tcpFramer(t, Options{}, func(s *Stream) error { streams <- s; return nil })
	for _, id := range []uint32{1, 3, 5} {
		if err := f.WriteFrame(syn(id, false)); err != nil {
			t.Fatal(err)
		}
	}
	bulk := make([]byte, 48<<20)
	var ss []*Stream
	for range 3 {
		ss = append(ss, <-streams)
	}
	// The client reads nothing yet: the first stream's write fills the
	// socket and the writer waits on it; the others queue behind.
	for _, s := range ss {
		go s.Write(bulk)
		waitFor(t, fmt.Sprintf("stream %d to be queued", s.ID()), func() bool {
			srv.wmu.Lock()
			defer srv.wmu.Unlock()
			return srv.writing && slices.Contains(srv.active, s)
		})
	}
	const window = 240 // frames: 30 batches, 30 MiB
	got := map[spdyframe.StreamId]int{}
	counting := false
	n := 0
	readUntil(t, f, nc, fmt.Sprintf("%d DATA frames from the third stream's first on", window), func(fr spdyframe.Frame) bool {
		d, ok := fr.(*spdyframe.DataFrame)
		if !ok {
			return false
		}
		if d.StreamId == spdyframe.StreamId(ss[2].ID()) {
			counting = true // from here on every stream is in each batch
		}
		if counting {
			got[d.StreamId] += len(d.Data)
			n++
		}
		return n == window
	})
	least, most := -1, 0
	for _, s := range ss {
		n := got[spdyframe.StreamId(s.ID())]
		if least < 0 || n < least {
			least = n
		}
		most = max(most, n)
	}
	if least*10 < most*9 {
		t.Fatalf("bytes per stream over %d frames: %v; the least served got %d, the most %d", window, got, least, most)
	}
}

// TestStalledStreamIsResetWithFlowControlError: a stream reset because
// its consumer read nothing while the client overran a budget gets
// RST_STREAM FLOW_CONTROL_ERROR, which tells the client why, whichever
// budget was spent: its own, the connection's, or the shared one (a
// stale stream that Reclaim resets). Kills CANCEL in each of the three.
func TestStalledStreamIsResetWithFlowControlError(t *testing.T) {
	const buf = 64 << 10
	const stall = 100 * time.Millisecond
	for _, tc := range []struct {
		name   string
		opts   Options
		frames []spdyframe.Frame
	}{
		{"stream buffer", Options{StreamBuffer: buf}, []spdyframe.Frame{
			syn(1, false), &spdyframe.DataFrame{StreamId: 1, Data: make([]byte, 2*buf)}}},
		{"connection buffer", Options{StreamBuffer: buf, ConnBuffer: buf}, []spdyframe.Frame{
			syn(1, false), &spdyframe.DataFrame{StreamId: 1, Data: make([]byte, buf)},
			syn(3, false), &spdyframe.DataFrame{StreamId: 3, Data: []byte("x")}}},
		{"shared budget", Options{Global: NewBudget(1 << 20)}, []spdyframe.Frame{
			syn(1, false), &spdyframe.DataFrame{StreamId: 1, Data: make([]byte, 1000)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.StallTimeout = stall
			p := newWirePeer(t, opts, func(*Stream) error { return nil }) // nobody reads
			go func() {
				for _, fr := range tc.frames {
					if p.f.WriteFrame(fr) != nil {
						return
					}
				}
			}()
			if opts.Global != nil {
				// Another holder of the budget, waiting for it, reclaims
				// the stale stream.
				waitFor(t, "stream 1 to go stale", func() bool {
					if _, reset := p.srv.FullestStale(); reset != nil {
						return reset()
					}
					return false
				})
			}
			var rst *spdyframe.RstStreamFrame
			p.collect(func(fr spdyframe.Frame) bool {
				rst, _ = fr.(*spdyframe.RstStreamFrame)
				return rst != nil
			}, "RST_STREAM")
			if rst.StreamId != 1 || rst.Status != spdyframe.FlowControlError {
				t.Fatalf("RST_STREAM for stream %d status %d, want stream 1 FLOW_CONTROL_ERROR", rst.StreamId, rst.Status)
			}
		})
	}
}

// TestSilentConnectionClosesAtItsIdleTimeout: a connection with no frame
// either way gets GOAWAY OK and is closed once IdleTimeout has passed,
// not before, and not several timeouts later. Kills an idle check that
// waits three times the timeout.
func TestSilentConnectionClosesAtItsIdleTimeout(t *testing.T) {
	const idle = time.Second
	start := time.Now()
	p := newWirePeer(t, Options{IdleTimeout: idle}, func(*Stream) error { return nil })
	p.collect(func(fr spdyframe.Frame) bool {
		g, ok := fr.(*spdyframe.GoAwayFrame)
		if ok && g.Status != spdyframe.GoAwayOK {
			t.Fatalf("GOAWAY status %d, want OK", g.Status)
		}
		return ok
	}, "GOAWAY at the idle timeout")
	select {
	case <-p.srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not end after its GOAWAY")
	}
	if took := time.Since(start); took < idle || took > 2*idle {
		t.Fatalf("a silent connection closed after %v, want its idle timeout %v (within one more)", took, idle)
	}
}

// TestFinishedStreamLeavesTheTableOnceRead: a stream ended both ways
// whose consumer reads the last of its bytes after the client's FIN
// leaves the connection's streams at that read, Reset or not, and no
// longer counts against MaxStreams. Kills the read not forgetting it.
func TestFinishedStreamLeavesTheTableOnceRead(t *testing.T) {
	read := make(chan struct{})
	done := make(chan error, 1)
	p := newWirePeer(t, Options{MaxStreams: 1}, func(s *Stream) error {
		if s.ID() != 1 {
			return nil
		}
		go func() {
			err := s.CloseWrite() // the pod's EOF
			<-read
			if b, rerr := io.ReadAll(s); err == nil && (rerr != nil || string(b) != "last") {
				err = fmt.Errorf("read %q, %v", b, rerr)
			}
			done <- err
		}()
		return nil
	})
	p.send(syn(1, false), &spdyframe.DataFrame{StreamId: 1, Flags: spdyframe.DataFlagFin, Data: []byte("last")})
	p.barrier() // the FIN is in, its bytes unread
	close(read)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	p.send(syn(3, false))
	p.collect(func(fr spdyframe.Frame) bool {
		if r, ok := fr.(*spdyframe.RstStreamFrame); ok && r.StreamId == 3 {
			t.Fatalf("stream 3 refused (status %d): the finished stream 1 still counts against MaxStreams 1", r.Status)
		}
		r, ok := fr.(*spdyframe.SynReplyFrame)
		return ok && r.StreamId == 3
	}, "SYN_REPLY for stream 3")
}

// TestMaxHeaderFieldIsAccepted: a header value of exactly MaxHeaderField
// bytes, the limit, is accepted and arrives whole (the header over its
// limit case of TestStreamRefusals refuses one byte more). Kills the
// field limit off by one ("l >= MaxHeaderField").
func TestMaxHeaderFieldIsAccepted(t *testing.T) {
	got := make(chan http.Header, 1)
	p := newWirePeer(t, Options{}, func(s *Stream) error { got <- s.Headers(); return nil })
	value := strings.Repeat("v", MaxHeaderField)
	p.send(&spdyframe.SynStreamFrame{StreamId: 1, Headers: http.Header{"A": {value}}})
	frames := p.barrier()
	for _, r := range rsts(frames) {
		t.Fatalf("RST_STREAM %d status %d for a header value of MaxHeaderField bytes", r.StreamId, r.Status)
	}
	select {
	case h := <-got:
		if v := h.Get("A"); v != value {
			t.Fatalf("accepted with a value of %d bytes, want %d", len(v), len(value))
		}
	default:
		t.Fatalf("stream 1 was not offered to accept; frames: %s", describe(frames))
	}
}

// TestPeerResetStreamFreesItsSlot: a stream the client resets leaves the
// connection's streams at once, so it no longer counts against
// MaxStreams: a client that opens and cancels forwards one at a time
// (kubectl's port-forward, each local connection a stream pair) must not
// be refused after MaxStreams of them. Kills the peer's RST_STREAM
// leaving the stream in the table.
func TestPeerResetStreamFreesItsSlot(t *testing.T) {
	p := newWirePeer(t, Options{MaxStreams: 1}, func(*Stream) error { return nil })
	for id := uint32(1); id <= 7; id += 2 {
		p.send(syn(id, false), &spdyframe.RstStreamFrame{StreamId: spdyframe.StreamId(id), Status: spdyframe.Cancel})
		frames := p.barrier()
		for _, r := range rsts(frames) {
			t.Fatalf("stream %d refused (status %d) after the client reset each stream before it; frames: %s", r.StreamId, r.Status, describe(frames))
		}
		replied := false
		for _, fr := range frames {
			if r, ok := fr.(*spdyframe.SynReplyFrame); ok && uint32(r.StreamId) == id {
				replied = true
			}
		}
		if !replied {
			t.Fatalf("no SYN_REPLY for stream %d; frames: %s", id, describe(frames))
		}
	}
}

// TestDroppedBytesAfterFINAreNotAnOrderlyEnd: bytes the client sent with
// its FIN but the consumer had not read when the connection ended are
// dropped, and the consumer's read says so (an error wrapping
// ErrConnClosed), not io.EOF: a forward taking io.EOF would half-close
// the pod's socket as if the upload were whole. Kills an abort keeping
// the FIN's io.EOF as the error reads return.
func TestDroppedBytesAfterFINAreNotAnOrderlyEnd(t *testing.T) {
	streams := make(chan *Stream, 1)
	p := newWirePeer(t, Options{}, func(s *Stream) error { streams <- s; return nil })
	p.send(syn(1, false), &spdyframe.DataFrame{StreamId: 1, Flags: spdyframe.DataFlagFin, Data: []byte("unread")})
	p.barrier() // the DATA and its FIN are in, unread
	s := <-streams
	if n := s.in.Buffered(); n != len("unread") {
		t.Fatalf("stream 1 holds %d bytes, want %d", n, len("unread"))
	}
	p.srv.Close()
	<-p.srv.Done()
	b, err := io.ReadAll(s)
	if !errors.Is(err, ErrConnClosed) {
		t.Fatalf("read %q, %v after the connection ended with the bytes unread; want an error wrapping ErrConnClosed", b, err)
	}
}

// TestHeaderBlockDataLeftUnusedIsBounded: compressed header data that a
// header block carries past its headers waits for the next block, the
// inflater's input being one stream; the server holds at most
// MaxHeaderBlock of it, and a client that keeps sending more (here
// HEADERS frames whose blocks each hold a header count of 0, then about
// 60 KiB more of zeros, stored, which the next read starts on) loses the
// connection with GOAWAY PROTOCOL_ERROR instead of growing the server's
// memory by a frame's size each frame. Kills dropping the bound.
func TestHeaderBlockDataLeftUnusedIsBounded(t *testing.T) {
	p := newWirePeer(t, Options{}, func(*Stream) error { return nil })
	var zbuf bytes.Buffer
	zw, err := zlib.NewWriterLevelDict(&zbuf, zlib.NoCompression, []byte(headerDictionary))
	if err != nil {
		t.Fatal(err)
	}
	var frames []byte
	for i := range 8 {
		n := 4 // the first block: a header count of 0
		if i > 0 {
			n = 60 << 10
		}
		zw.Write(make([]byte, n))
		zw.Flush()
		block := zbuf.Bytes()
		frames = appendControlHeader(frames, typeHeaders, 0, 4+len(block))
		frames = binary.BigEndian.AppendUint32(frames, 1)
		frames = append(frames, block...)
		zbuf.Reset()
	}
	frames = appendPing(frames, 1)
	go p.nc.Write(frames) // the server may end the connection before it reads them all
	p.collect(func(fr spdyframe.Frame) bool {
		if pf, ok := fr.(*spdyframe.PingFrame); ok && pf.Id == 1 {
			t.Fatal("the server read 8 header blocks, each leaving 60 KiB unused, and went on")
		}
		g, ok := fr.(*spdyframe.GoAwayFrame)
		return ok && g.Status == spdyframe.GoAwayProtocolError
	}, "GOAWAY PROTOCOL_ERROR for header block data left unused")
}

// TestStreamWindowUpdatesCreditEachByteOnce: the WINDOW_UPDATEs of a
// stream whose consumer reads its whole buffer, in small reads, give the
// client's stream window back exactly the bytes read, no more: a client
// that honours flow control and is credited twice sends past the
// stream's buffer. Kills the stream's count of bytes to credit not
// restarting after each WINDOW_UPDATE.
func TestStreamWindowUpdatesCreditEachByteOnce(t *testing.T) {
	const buf = 64 << 10
	streams := make(chan *Stream, 1)
	p := newWirePeer(t, Options{StreamBuffer: buf}, func(s *Stream) error { streams <- s; return nil })
	p.send(syn(1, false), &spdyframe.DataFrame{StreamId: 1, Data: make([]byte, buf)})
	s := <-streams
	small := make([]byte, 1<<10)
	for range buf / len(small) {
		if _, err := io.ReadFull(s, small); err != nil {
			t.Fatal(err)
		}
	}
	credit := 0
	for _, fr := range p.barrier() {
		if w, ok := fr.(*spdyframe.WindowUpdateFrame); ok && w.StreamId == 1 {
			credit += int(w.DeltaWindowSize)
		}
	}
	if credit != buf {
		t.Fatalf("stream 1's WINDOW_UPDATEs credit %d bytes for the %d read", credit, buf)
	}
}

// TestWriteOnARefusedStreamReturns: a stream accept refused (its
// RST_STREAM CANCEL sent, no SYN_REPLY) fails a Write, or a Reset,
// started from accept, with ErrReset: neither waits for a SYN_REPLY
// that will never come. Kills the refusal not releasing the wait for
// the reply.
func TestWriteOnARefusedStreamReturns(t *testing.T) {
	wrote := make(chan error, 1)
	p := newWirePeer(t, Options{}, func(s *Stream) error {
		go func() {
			_, err := s.Write([]byte("never sent"))
			s.Reset()
			wrote <- err
		}()
		return errors.New("refused")
	})
	p.send(syn(1, false))
	p.barrier()
	select {
	case err := <-wrote:
		if !errors.Is(err, ErrReset) {
			t.Fatalf("Write on a refused stream: %v, want ErrReset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Write on a refused stream did not return within 10s")
	}
}

// TestHeadersFrameKeepsTheInflaterInStep: a HEADERS frame, which
// port-forward has no use for, is read through the connection's inflater
// all the same: the client's compressor, one zlib stream for all its
// header blocks, counts it, and the next SYN_STREAM's block only inflates
// after it. Kills skipping the HEADERS frame's block.
func TestHeadersFrameKeepsTheInflaterInStep(t *testing.T) {
	p := newWirePeer(t, Options{}, func(*Stream) error { return nil })
	p.send(syn(1, false),
		&spdyframe.HeadersFrame{StreamId: 1, Headers: http.Header{"Extra": {strings.Repeat("header ", 100)}}},
		&spdyframe.SynStreamFrame{StreamId: 3, Headers: http.Header{"Extra": {strings.Repeat("header ", 100)}}})
	p.collect(func(fr spdyframe.Frame) bool {
		if g, ok := fr.(*spdyframe.GoAwayFrame); ok {
			t.Fatalf("GOAWAY status %d after a HEADERS frame", g.Status)
		}
		r, ok := fr.(*spdyframe.SynReplyFrame)
		return ok && r.StreamId == 3
	}, "SYN_REPLY 3 after stream 1's HEADERS")
}
