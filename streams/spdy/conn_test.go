package spdy

import (
	"compress/zlib"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/moby/spdystream"
	spdyframe "github.com/moby/spdystream/spdy"
)

// pair connects a moby/spdystream client (what every Kubernetes client
// runs) to a Conn over loopback TCP. accepted receives each stream the
// server accepts.
func pair(t *testing.T, opts Options) (*spdystream.Connection, *Conn, chan *Stream) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *Stream, 100)
	srvc := make(chan *Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		srvc <- Serve(nc, func(s *Stream) error { accepted <- s; return nil }, opts)
	}()
	nc, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client, err := spdystream.NewConnection(nc, false)
	if err != nil {
		t.Fatal(err)
	}
	go client.Serve(spdystream.NoOpStreamHandler)
	srv := <-srvc
	t.Cleanup(func() {
		nc.Close() // first: a flooding client's Close would block on its full socket
		client.Close()
		srv.Close()
		<-srv.Done()
	})
	return client, srv, accepted
}

func open(t *testing.T, client *spdystream.Connection, accepted chan *Stream, name string) (*spdystream.Stream, *Stream) {
	t.Helper()
	cs, err := client.CreateStream(http.Header{"Name": {name}}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.WaitTimeout(10 * time.Second); err != nil {
		t.Fatalf("SYN_REPLY for %s: %v", name, err)
	}
	select {
	case ss := <-accepted:
		if got := ss.Headers().Get("Name"); got != name {
			t.Fatalf("server stream headers: name %q, want %q", got, name)
		}
		return cs, ss
	case <-time.After(10 * time.Second):
		t.Fatal("stream not accepted")
		return nil, nil
	}
}

func TestStreamsBothWaysWithHalfClose(t *testing.T) {
	client, _, accepted := pair(t, Options{})
	for i := range 3 { // several streams: the header inflater keeps its state
		cs, ss := open(t, client, accepted, "s"+strconv.Itoa(i))
		cs.Write([]byte("hello"))
		cs.Close()
		got, err := io.ReadAll(ss)
		if err != nil || string(got) != "hello" {
			t.Fatalf("server read %q, %v", got, err)
		}
		ss.Write([]byte("world"))
		ss.CloseWrite()
		got, err = io.ReadAll(cs)
		if err != nil || string(got) != "world" {
			t.Fatalf("client read %q, %v", got, err)
		}
		ss.Reset()
	}
}

func TestBulkIntegrityBothWays(t *testing.T) {
	client, _, accepted := pair(t, Options{})
	cs, ss := open(t, client, accepted, "bulk")
	const size = 32 << 20
	up, down := make([]byte, size), make([]byte, size)
	rand.Read(up)
	rand.Read(down)
	go func() {
		for b := up; len(b) > 0; b = b[min(len(b), 32<<10):] {
			cs.Write(b[:min(len(b), 32<<10)])
		}
		cs.Close()
	}()
	go func() {
		ss.Write(down)
		ss.CloseWrite()
	}()
	gotUp, err := io.ReadAll(ss)
	if err != nil || sha256.Sum256(gotUp) != sha256.Sum256(up) {
		t.Fatalf("client→server: %d bytes, %v", len(gotUp), err)
	}
	gotDown, err := io.ReadAll(cs)
	if err != nil || sha256.Sum256(gotDown) != sha256.Sum256(down) {
		t.Fatalf("server→client: %d bytes, %v", len(gotDown), err)
	}
}

// TestStuckStreamWithinBudgetDoesNotBlockOthers: a stream nobody reads,
// holding less than its budget, leaves the reader free: another stream
// moves 64 MiB. The stall timeout is an hour, so any wait would hang.
func TestStuckStreamWithinBudgetDoesNotBlockOthers(t *testing.T) {
	client, _, accepted := pair(t, Options{StreamBuffer: 1 << 20, StallTimeout: time.Hour})
	stuck, _ := open(t, client, accepted, "stuck")
	stuck.Write(make([]byte, 512<<10)) // never read on the server
	cs, ss := open(t, client, accepted, "bulk")
	go func() {
		chunk := make([]byte, 32<<10)
		for range (64 << 20) / len(chunk) {
			cs.Write(chunk)
		}
		cs.Close()
	}()
	n, err := io.Copy(io.Discard, ss)
	if err != nil || n != 64<<20 {
		t.Fatalf("bulk stream: %d bytes, %v", n, err)
	}
}

// TestStuckStreamOverBudgetIsResetAfterStall: a peer that ignores flow
// control (spdystream) and overruns a stream nobody reads makes the reader
// wait; after the stall timeout that stream is reset with
// FLOW_CONTROL_ERROR and the other streams go on.
func TestStuckStreamOverBudgetIsResetAfterStall(t *testing.T) {
	client, srv, accepted := pair(t, Options{StreamBuffer: 256 << 10, StallTimeout: 200 * time.Millisecond})
	stuck, ssStuck := open(t, client, accepted, "stuck")
	wrote := make(chan error, 1)
	go func() {
		chunk := make([]byte, 32<<10)
		for range 32 { // 1 MiB, four budgets; nobody reads ssStuck
			if _, err := stuck.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	cs, ss := open(t, client, accepted, "other")
	cs.Write([]byte("after the stall"))
	cs.Close()
	got, err := io.ReadAll(ss)
	if err != nil || string(got) != "after the stall" {
		t.Fatalf("other stream: %q, %v", got, err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("client write: %v", err)
	}
	// The stuck stream overran its budget and nobody read it: it must be
	// reset, without anyone consuming it first (a read would drain it).
	waitFor(t, "the stuck stream to be reset", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		_, open := srv.streams[ssStuck.ID()]
		return !open
	})
	if _, err := ssStuck.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
		t.Fatalf("stuck stream read: %v, want ErrReset", err)
	}
	if b := srv.buffered.Load(); b != 0 {
		t.Fatalf("connection still accounts %d buffered bytes", b)
	}
}

// TestFloodIsBoundedByBudgets: a client that floods a stream nobody reads
// costs at most the stream budget.
func TestFloodIsBoundedByBudgets(t *testing.T) {
	client, srv, accepted := pair(t, Options{StreamBuffer: 128 << 10, StallTimeout: time.Hour})
	cs, _ := open(t, client, accepted, "flood")
	go func() {
		chunk := make([]byte, 32<<10)
		for {
			if _, err := cs.Write(chunk); err != nil {
				return
			}
		}
	}()
	waitFor(t, "the stream budget to fill", func() bool { return srv.buffered.Load() >= 128<<10 })
	if got := srv.buffered.Load(); got != 128<<10 {
		t.Fatalf("buffered %d bytes, want exactly the 128 KiB budget", got)
	}
}

// rawClient writes frames with spdystream's framer and reads the server's
// frames with it, to check what goes over the wire.
func rawClient(t *testing.T, opts Options) (*spdyframe.Framer, net.Conn, *Conn) {
	t.Helper()
	a, b := net.Pipe()
	srv := Serve(b, func(s *Stream) error {
		go io.Copy(io.Discard, s) // a consumer that keeps up
		return nil
	}, opts)
	t.Cleanup(func() { a.Close(); srv.Close(); <-srv.Done() })
	f, err := spdyframe.NewFramer(a, a)
	if err != nil {
		t.Fatal(err)
	}
	return f, a, srv
}

// frameWait is how long a test waits for the server's next frame: a
// regression fails the test, saying what it waited for, instead of
// hanging it until the package's timeout.
const frameWait = 10 * time.Second

// readUntil reads the server's frames from f, whose connection is nc,
// until done returns true for one, and returns that one. It fails the
// test, saying it waited for what and which frames came last, when the
// connection ends or no frame comes for frameWait. It leaves nc with no
// read deadline.
func readUntil(t *testing.T, f *spdyframe.Framer, nc net.Conn, what string, done func(spdyframe.Frame) bool) spdyframe.Frame {
	t.Helper()
	defer nc.SetReadDeadline(time.Time{})
	var last []spdyframe.Frame // the last few frames read, for the failure
	for {
		nc.SetReadDeadline(time.Now().Add(frameWait))
		fr, err := f.ReadFrame()
		if err != nil {
			t.Fatalf("no %s: %v; the last frames before: %s", what, err, describe(last))
		}
		if done(fr) {
			return fr
		}
		if len(last) == 16 {
			last = last[1:]
		}
		last = append(last, fr)
	}
}

func TestWireSettingsRepliesAndWindowUpdates(t *testing.T) {
	f, nc, _ := rawClient(t, Options{StreamBuffer: 64 << 10})
	go func() {
		f.WriteFrame(&spdyframe.SynStreamFrame{StreamId: 1, Headers: http.Header{"Port": {"80"}}})
		f.WriteFrame(&spdyframe.PingFrame{Id: 7})
		f.WriteFrame(&spdyframe.DataFrame{StreamId: 1, Data: make([]byte, 40<<10)})
	}()
	var sawSettings, sawReply, sawPing, sawWindow bool
	readUntil(t, f, nc, "SETTINGS, SYN_REPLY 1, PING 7 and a WINDOW_UPDATE of 32 KiB or more for stream 1", func(fr spdyframe.Frame) bool {
		switch fr := fr.(type) {
		case *spdyframe.SettingsFrame:
			sawSettings = len(fr.FlagIdValues) == 1 && fr.FlagIdValues[0].Id == spdyframe.SettingsInitialWindowSize && fr.FlagIdValues[0].Value == 64<<10
		case *spdyframe.SynReplyFrame:
			sawReply = fr.StreamId == 1
		case *spdyframe.PingFrame:
			sawPing = fr.Id == 7
		case *spdyframe.WindowUpdateFrame:
			// Half the 64 KiB budget consumed: the stream gets its window back.
			sawWindow = sawWindow || fr.StreamId == 1 && fr.DeltaWindowSize >= 32<<10
		}
		return sawSettings && sawReply && sawPing && sawWindow
	})
}

func TestWireProtocolErrors(t *testing.T) {
	tests := []struct {
		name   string
		frames []spdyframe.Frame
		raw    []byte
		what   string // the frame wanted
		want   func(spdyframe.Frame) bool
	}{
		{"stream id goes backwards", []spdyframe.Frame{
			&spdyframe.SynStreamFrame{StreamId: 5, Headers: http.Header{"A": {"b"}}},
			&spdyframe.SynStreamFrame{StreamId: 3, Headers: http.Header{"A": {"b"}}},
		}, nil, "RST_STREAM 3 PROTOCOL_ERROR", func(fr spdyframe.Frame) bool {
			r, ok := fr.(*spdyframe.RstStreamFrame)
			return ok && r.StreamId == 3 && r.Status == spdyframe.ProtocolError
		}},
		{"even stream id", []spdyframe.Frame{
			&spdyframe.SynStreamFrame{StreamId: 2, Headers: http.Header{"A": {"b"}}},
		}, nil, "RST_STREAM 2 PROTOCOL_ERROR", func(fr spdyframe.Frame) bool {
			r, ok := fr.(*spdyframe.RstStreamFrame)
			return ok && r.StreamId == 2 && r.Status == spdyframe.ProtocolError
		}},
		{"oversized control frame", nil, []byte{0x80, 3, 0, 4, 0, 0x10, 0, 0}, "GOAWAY PROTOCOL_ERROR", func(fr spdyframe.Frame) bool {
			g, ok := fr.(*spdyframe.GoAwayFrame)
			return ok && g.Status == spdyframe.GoAwayProtocolError
		}},
		{"data on stream 0", nil, []byte{0, 0, 0, 0, 0, 0, 0, 1, 'x'}, "GOAWAY PROTOCOL_ERROR", func(fr spdyframe.Frame) bool {
			g, ok := fr.(*spdyframe.GoAwayFrame)
			return ok && g.Status == spdyframe.GoAwayProtocolError
		}},
		// Shorter than their fields: the frame's length does not hold
		// what it says, as for SETTINGS.
		{"short RST_STREAM", nil, controlFrame(typeRstStream, 4), "GOAWAY PROTOCOL_ERROR", func(fr spdyframe.Frame) bool {
			g, ok := fr.(*spdyframe.GoAwayFrame)
			return ok && g.Status == spdyframe.GoAwayProtocolError
		}},
		{"short WINDOW_UPDATE", nil, controlFrame(typeWindowUpdate, 4), "GOAWAY PROTOCOL_ERROR", func(fr spdyframe.Frame) bool {
			g, ok := fr.(*spdyframe.GoAwayFrame)
			return ok && g.Status == spdyframe.GoAwayProtocolError
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, raw, _ := rawClient(t, Options{})
			go func() {
				for _, fr := range tt.frames {
					f.WriteFrame(fr)
				}
				raw.Write(tt.raw)
			}()
			readUntil(t, f, raw, tt.what, tt.want)
		})
	}
}

func TestHeaderBombEndsConnection(t *testing.T) {
	// A header block that inflates to far more than MaxHeaderBlock: one
	// header whose value is 1 MiB of zeros compresses to a few KiB.
	f, _, srv := rawClient(t, Options{})
	go f.WriteFrame(&spdyframe.SynStreamFrame{StreamId: 1, Headers: http.Header{"Bomb": {string(make([]byte, 1<<20))}}})
	select {
	case <-srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a header bomb did not end the connection")
	}
	var ce *connError
	if !errors.As(srv.Err(), &ce) {
		t.Fatalf("connection ended with %v, want a protocol error", srv.Err())
	}
}

// TestEmptyHeaderBlocksInflate: the hand-made SYN_REPLY header blocks of
// one connection form one zlib stream with the SPDY/3 dictionary that an
// inflater reads block by block, each a header count of zero.
func TestEmptyHeaderBlocksInflate(t *testing.T) {
	var hw headerWriter
	pr, pw := io.Pipe()
	go func() {
		for range 3 {
			pw.Write(append([]byte(nil), hw.emptyBlock()...))
		}
		pw.Close()
	}()
	zr, err := zlib.NewReaderDict(pr, []byte(headerDictionary))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		var count [4]byte
		if _, err := io.ReadFull(zr, count[:]); err != nil || count != [4]byte{} {
			t.Fatalf("block %d: count %v, %v", i, count, err)
		}
	}
}
