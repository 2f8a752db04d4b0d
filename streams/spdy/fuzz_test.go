package spdy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	spdyframe "github.com/moby/spdystream/spdy"
)

// clientFrames encodes frames the way Kubernetes clients (spdystream) do,
// for seed corpora.
func clientFrames(t testing.TB, frames ...spdyframe.Frame) []byte {
	var buf bytes.Buffer
	f, err := spdyframe.NewFramer(&buf, &buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, fr := range frames {
		if err := f.WriteFrame(fr); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// FuzzHeaderBlock feeds arbitrary header blocks to the inflater: it must
// never panic, never return more than MaxHeaders headers or fields over
// MaxHeaderField, and stop at MaxHeaderBlock inflated bytes.
func FuzzHeaderBlock(f *testing.F) {
	syn := clientFrames(f, &spdyframe.SynStreamFrame{StreamId: 1, Headers: http.Header{"Port": {"80"}, "Streamtype": {"data"}}})
	f.Add(syn[18:])
	f.Add([]byte{0x78, 0xbb})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, block []byte) {
		var r headerReader
		h, _ := r.read(block)
		if len(h) > MaxHeaders {
			t.Fatalf("%d headers", len(h))
		}
		for k, vs := range h {
			for _, v := range vs {
				if len(k) > MaxHeaderField || len(v) > MaxHeaderField {
					t.Fatalf("field of %d/%d bytes", len(k), len(v))
				}
			}
		}
	})
}

// fuzzConn is a net.Conn that reads a fixed input and records writes.
type fuzzConn struct {
	r *bytes.Reader
	w *lockedBuffer
	net.Conn
}

func (c fuzzConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c fuzzConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c fuzzConn) Close() error                { return nil }

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// fuzzOptions keep the budgets small, so that fuzz inputs reach them.
var fuzzOptions = Options{StreamBuffer: 4 << 10, ConnBuffer: 16 << 10, StallTimeout: 10 * time.Millisecond, MaxStreams: 8, MaxFrame: 1 << 10}

// FuzzConn runs a whole connection over arbitrary client bytes, with a
// consumer that echoes every stream. It must end (at EOF at the latest)
// without panicking, with no bytes left accounted as buffered, never
// holding more than its budgets, and write only frames spdystream can
// read, in an order the protocol allows (see checkServerOutput).
func FuzzConn(f *testing.F) {
	f.Add(clientFrames(f,
		&spdyframe.SynStreamFrame{StreamId: 1, Headers: http.Header{"Port": {"80"}}},
		&spdyframe.DataFrame{StreamId: 1, Data: []byte("hello"), Flags: spdyframe.DataFlagFin},
		&spdyframe.PingFrame{Id: 1},
		&spdyframe.SettingsFrame{FlagIdValues: []spdyframe.SettingsFlagIdValue{{Id: 7, Value: 1 << 20}}},
		&spdyframe.WindowUpdateFrame{StreamId: 1, DeltaWindowSize: 10},
		&spdyframe.RstStreamFrame{StreamId: 1, Status: spdyframe.Cancel},
		&spdyframe.SynStreamFrame{StreamId: 3, Headers: http.Header{"A": {"b"}}},
		&spdyframe.HeadersFrame{StreamId: 3, Headers: http.Header{"C": {"d"}}},
		&spdyframe.GoAwayFrame{LastGoodStreamId: 3},
	))
	f.Add([]byte{0x80, 3, 0, 1, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	// What client-go sends for one forwarded connection: the error
	// stream, the data stream, a request and the client's half-close.
	f.Add(clientFrames(f,
		&spdyframe.SynStreamFrame{StreamId: 1, Headers: http.Header{"Streamtype": {"error"}, "Port": {"8080"}, "Requestid": {"0"}}},
		&spdyframe.SynStreamFrame{StreamId: 3, Headers: http.Header{"Streamtype": {"data"}, "Port": {"8080"}, "Requestid": {"0"}}},
		&spdyframe.DataFrame{StreamId: 3, Data: []byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")},
		&spdyframe.DataFrame{StreamId: 3, Flags: spdyframe.DataFlagFin},
		&spdyframe.DataFrame{StreamId: 1, Flags: spdyframe.DataFlagFin},
	))
	f.Fuzz(func(t *testing.T, in []byte) {
		out := &lockedBuffer{}
		run := startEchoServer(t, fuzzConn{r: bytes.NewReader(in), w: out}, fuzzOptions)
		run.wait(t)
		checkServerOutput(t, out.Bytes(), run, nil)
	})
}

// echoStream is what the fuzz consumer saw and did on one stream; it is
// owned by the consumer's goroutine until the run's WaitGroup is done.
type echoStream struct {
	read  []byte // every byte read
	sent  []byte // the bytes of Writes that returned nil
	tried []byte // sent, then the Write that failed
	fin   bool   // CloseWrite returned nil
	over  string // a budget seen exceeded
}

// echoRun is a connection served with echoing consumers.
type echoRun struct {
	c         *Conn
	opts      Options
	mu        sync.Mutex
	streams   map[uint32]*echoStream
	consumers sync.WaitGroup
}

// startEchoServer serves nc with a consumer per stream that writes back
// what it reads (in reads of a size that depends on the stream) and
// half-closes at EOF, checking the budgets before every read.
func startEchoServer(t *testing.T, nc net.Conn, opts Options) *echoRun {
	run := &echoRun{opts: opts, streams: map[uint32]*echoStream{}}
	run.c = Serve(nc, func(s *Stream) error {
		e := &echoStream{}
		run.mu.Lock()
		run.streams[s.id] = e
		run.mu.Unlock()
		run.consumers.Go(func() { run.echo(s, e) })
		return nil
	}, opts)
	return run
}

func (run *echoRun) echo(s *Stream, e *echoStream) {
	buf := make([]byte, 1+int(s.id%1500))
	writing := true
	for {
		if n := s.in.Buffered(); n > run.opts.StreamBuffer && e.over == "" {
			e.over = fmt.Sprintf("stream holds %d bytes, StreamBuffer is %d", n, run.opts.StreamBuffer)
		}
		// The reader admits a chunk of at most StreamBuffer while the
		// connection holds less than ConnBuffer.
		if n := s.c.buffered.Load(); n > int64(run.opts.ConnBuffer+run.opts.StreamBuffer) && e.over == "" {
			e.over = fmt.Sprintf("connection holds %d bytes, ConnBuffer is %d", n, run.opts.ConnBuffer)
		}
		n, err := s.Read(buf)
		e.read = append(e.read, buf[:n]...)
		if n > 0 && writing {
			e.tried = append(e.tried, buf[:n]...)
			if _, werr := s.Write(buf[:n]); werr != nil {
				writing = false
			} else {
				e.sent = append(e.sent, buf[:n]...)
			}
		}
		if err != nil {
			if err == io.EOF && writing {
				e.fin = s.CloseWrite() == nil
			}
			return
		}
	}
}

// wait waits for the connection to end and every consumer to return.
func (run *echoRun) wait(t *testing.T) {
	t.Helper()
	select {
	case <-run.c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection did not end at EOF")
	}
	done := make(chan struct{})
	go func() {
		run.consumers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a stream's Read or Write did not return after the connection ended")
	}
	// Every stream's reads end once the connection has (EOF or reset);
	// then nothing may be left accounted.
	if b := run.c.buffered.Load(); b != 0 {
		t.Fatalf("%d bytes still accounted as buffered", b)
	}
	for id, e := range run.streams {
		if e.over != "" {
			t.Fatalf("stream %d: %s", id, e.over)
		}
	}
}

// serverStream is what the server's output says about one stream.
type serverStream struct {
	replied, fin bool
	data         []byte
}

// cleanModel is what a connection that breaks no rule must answer.
type cleanModel struct {
	pings  []uint32 // odd ping ids, in order: each is echoed
	lastID uint32   // the GOAWAY's last good stream
}

// checkServerOutput decodes what the server wrote with spdystream's framer
// and checks it against what the consumers did:
//
//   - every frame is one spdystream can read (it ends a client's
//     connection on any other);
//   - the server opens no stream and sends no HEADERS;
//   - one SYN_REPLY per accepted stream, at odd ids, and nothing on a
//     stream (data, FIN) before its SYN_REPLY or after its FIN;
//   - each stream's data is exactly what its consumer wrote: all of the
//     Writes that succeeded, then at most part of the one that failed;
//   - a CloseWrite that returned nil put a FIN on the wire;
//   - at most one GOAWAY;
//   - with model, the exact pings and GOAWAY a clean connection gets.
func checkServerOutput(t *testing.T, out []byte, run *echoRun, model *cleanModel) {
	t.Helper()
	fr, err := spdyframe.NewFramer(io.Discard, bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	streams := map[uint32]*serverStream{}
	get := func(id spdyframe.StreamId) *serverStream {
		s := streams[uint32(id)]
		if s == nil {
			s = &serverStream{}
			streams[uint32(id)] = s
		}
		return s
	}
	var frames []string
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("server frame %d: %s\nframes before: %v", len(frames), fmt.Sprintf(format, args...), frames)
	}
	var pings []uint32
	var goAway *spdyframe.GoAwayFrame
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail("spdystream cannot read it: %v", err)
		}
		switch f := f.(type) {
		case *spdyframe.SynReplyFrame:
			s := get(f.StreamId)
			if f.StreamId%2 == 0 || s.replied {
				fail("SYN_REPLY for stream %d (even, or a second one)", f.StreamId)
			}
			s.replied = true
			frames = append(frames, fmt.Sprintf("SYN_REPLY %d", f.StreamId))
		case *spdyframe.DataFrame:
			s := get(f.StreamId)
			if !s.replied || s.fin {
				fail("DATA on stream %d before its SYN_REPLY or after its FIN", f.StreamId)
			}
			s.data = append(s.data, f.Data...)
			s.fin = f.Flags&spdyframe.DataFlagFin != 0
			frames = append(frames, fmt.Sprintf("DATA %d len %d flags %d", f.StreamId, len(f.Data), f.Flags))
		case *spdyframe.RstStreamFrame:
			frames = append(frames, fmt.Sprintf("RST_STREAM %d %d", f.StreamId, f.Status))
		case *spdyframe.PingFrame:
			pings = append(pings, f.Id)
			frames = append(frames, fmt.Sprintf("PING %d", f.Id))
		case *spdyframe.GoAwayFrame:
			if goAway != nil {
				fail("a second GOAWAY")
			}
			goAway = f
			frames = append(frames, fmt.Sprintf("GOAWAY %d %d", f.LastGoodStreamId, f.Status))
		case *spdyframe.SettingsFrame, *spdyframe.WindowUpdateFrame:
			frames = append(frames, fmt.Sprintf("%T", f))
		default:
			fail("the server sent a %T", f)
		}
	}
	for id, e := range run.streams {
		s := get(spdyframe.StreamId(id))
		if !s.replied {
			t.Fatalf("accepted stream %d got no SYN_REPLY; frames: %v", id, frames)
		}
		if !bytes.HasPrefix(s.data, e.sent) || !bytes.HasPrefix(e.tried, s.data) {
			t.Fatalf("stream %d: server sent %q, consumer wrote %q (then tried %q)", id, s.data, e.sent, e.tried[len(e.sent):])
		}
		if e.fin && !s.fin {
			t.Fatalf("stream %d: CloseWrite returned nil but no FIN went out; frames: %v", id, frames)
		}
	}
	if model == nil {
		return
	}
	if fmt.Sprint(pings) != fmt.Sprint(model.pings) {
		t.Fatalf("ping replies %v, want %v (the client's odd ids, in order)", pings, model.pings)
	}
	if goAway == nil || uint32(goAway.LastGoodStreamId) != model.lastID || goAway.Status != spdyframe.GoAwayOK {
		t.Fatalf("GOAWAY %+v at EOF, want last good stream %d, status OK; frames: %v", goAway, model.lastID, frames)
	}
}

// socketPair returns the two ends of a unix stream socket pair: the
// engine writes to *net.UnixConn with writev and, when its writer is idle,
// straight from Write (writeDirect), which a plain net.Conn never gets.
func socketPair(t *testing.T) (server, client *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.CloseOnExec(fds[0]) // SOCK_CLOEXEC is Linux's
	syscall.CloseOnExec(fds[1])
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// fuzzHeaderSets are stream headers as Kubernetes clients send them, and
// a few that break the engine's per-stream limits.
var fuzzHeaderSets = []http.Header{
	{"Streamtype": {"error"}, "Port": {"8080"}, "Requestid": {"0"}},
	{"Streamtype": {"data"}, "Port": {"8080"}, "Requestid": {"0"}},
	{"Streamtype": {"data"}, "Port": {"80"}},
	{},
	manyHeaders(MaxHeaders + 1),
	{"Port": {"1", "2"}, "Requestid": {""}},
}

func manyHeaders(n int) http.Header {
	h := http.Header{}
	for i := range n {
		h.Set("H"+strconv.Itoa(i), "v")
	}
	return h
}

// FuzzControlFrames builds well-formed frame sequences from the input
// (one op per input byte, with operands from the bytes after it) and runs
// them over a unix socket, so the writer's vectored and direct paths run.
// Besides FuzzConn's properties: each stream reads a prefix of the data
// the client sent on it (not all of it: at EOF the engine drops what its
// consumers have not read yet); and as long as the client breaks no
// connection-level rule, every odd PING is
// answered in order and the connection ends at EOF with GOAWAY OK naming
// the last stream the client opened.
//
// Ops (low 3 bits; operands follow): 0 SYN_STREAM [id], 1 DATA stream
// length bytes, 2 PING id, 3 RST_STREAM stream status, 4 SETTINGS n
// {id value}, 5 WINDOW_UPDATE stream delta, 6 HEADERS stream, 7 control
// frame type flags length bytes. Ops 0-6 are well-formed (the high bits
// pick flags, header sets, sizes); op 7 may break the connection, and
// then only FuzzConn's properties are checked.
func FuzzControlFrames(f *testing.F) {
	f.Add([]byte{0x00, 0x01, 0x20, 'h', 'i', 0x08, 0x01, 0x60, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2})
	f.Add([]byte{0x40, 0x00, 0x03, 0x00, 0x05, 0x04, 0x02, 0x06, 0x01, 0x0b, 0x07, 0, 7, 0, 4, 1, 2, 3, 4})
	f.Add([]byte{0x80, 0, 0, 0, 9, 0x80, 0, 0, 0, 5, 0x01, 0x01, 0x10, 'a'})
	f.Add(bytes.Repeat([]byte{0x00, 0x01, 0xff}, 12))
	f.Fuzz(func(t *testing.T, ops []byte) {
		sc := buildFrames(t, ops)
		srv, cli := socketPair(t)
		defer cli.Close()
		outc := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(cli)
			outc <- b
		}()
		run := startEchoServer(t, srv, fuzzOptions)
		go func() {
			cli.Write(sc.in)
			cli.CloseWrite()
		}()
		run.wait(t)
		var out []byte
		select {
		case out = <-outc:
		case <-time.After(10 * time.Second):
			t.Fatal("server did not close the connection")
		}
		for id := range run.streams {
			if !sc.opened[id] {
				t.Fatalf("stream %d accepted, but the client opened only %v", id, sc.opened)
			}
		}
		checkServerOutput(t, out, run, sc.model)
		for id, e := range run.streams {
			if sent := sc.data[id]; !bytes.HasPrefix(sent, e.read) {
				t.Fatalf("stream %d read %q; the client sent %q", id, e.read, sent)
			}
		}
	})
}

// clientScript is a client's frames and what they should do.
type clientScript struct {
	in     []byte
	model  *cleanModel // nil once an op may break the connection
	opened map[uint32]bool
	data   map[uint32][]byte // DATA sent on each stream after it opened, until its FIN
	fin    map[uint32]bool   // the client sent FIN
}

// buildFrames turns ops into client frames (see FuzzControlFrames).
func buildFrames(t *testing.T, ops []byte) clientScript {
	var buf bytes.Buffer
	fr, err := spdyframe.NewFramer(&buf, &buf)
	if err != nil {
		t.Fatal(err)
	}
	model, clean := &cleanModel{}, true
	opened := map[uint32]bool{}
	sc := clientScript{data: map[uint32][]byte{}, fin: map[uint32]bool{}}
	// after records what a frame did once it is on the wire.
	var after func()
	var ids []uint32
	next := uint32(1)
	i := 0
	operand := func() byte {
		if i >= len(ops) {
			return 0
		}
		i++
		return ops[i-1]
	}
	u32 := func() uint32 {
		return uint32(operand())<<24 | uint32(operand())<<16 | uint32(operand())<<8 | uint32(operand())
	}
	stream := func() spdyframe.StreamId {
		if len(ids) == 0 {
			return spdyframe.StreamId(next) // not opened yet: a stream error
		}
		return spdyframe.StreamId(ids[int(operand())%len(ids)])
	}
	for i < len(ops) {
		op := operand()
		var frame spdyframe.Frame
		after = nil
		switch op & 7 {
		case 0:
			id := next & maxStreamID
			if op&0x80 != 0 {
				id = u32() & maxStreamID // maybe even, old or zero: RST_STREAM
			}
			next = max(next, id+2) | 1
			syn := &spdyframe.SynStreamFrame{StreamId: spdyframe.StreamId(id), Headers: fuzzHeaderSets[int(op>>3&7)%len(fuzzHeaderSets)]}
			if op&0x40 != 0 {
				syn.CFHeader.Flags = spdyframe.ControlFlagFin
			}
			frame = syn
			if id%2 == 1 && id > model.lastID {
				model.lastID = id
			}
			if id != 0 {
				first := !opened[id]
				opened[id] = true
				ids = append(ids, id)
				after = func() {
					if first && op&0x40 != 0 {
						sc.fin[id] = true
					}
				}
			}
		case 1:
			st := stream()
			n := int(operand()) % 64 * (1 + int(op>>5)) // up to 504 bytes
			data := bytes.Repeat([]byte{op}, n)
			i += copy(data, ops[i:])
			d := &spdyframe.DataFrame{StreamId: st, Data: data}
			if op&0x10 != 0 {
				d.Flags = spdyframe.DataFlagFin
			}
			frame = d
			after = func() {
				if id := uint32(st); opened[id] && !sc.fin[id] {
					sc.data[id] = append(sc.data[id], data...)
					sc.fin[id] = d.Flags&spdyframe.DataFlagFin != 0
				}
			}
		case 2:
			id := u32()
			frame = &spdyframe.PingFrame{Id: id}
			if id%2 == 1 {
				model.pings = append(model.pings, id)
			}
		case 3:
			frame = &spdyframe.RstStreamFrame{StreamId: stream(), Status: spdyframe.RstStreamStatus(1 + operand()%11)}
		case 4:
			var vs []spdyframe.SettingsFlagIdValue
			for range operand() % 4 {
				vs = append(vs, spdyframe.SettingsFlagIdValue{Id: spdyframe.SettingsId(operand() % 8), Value: u32()})
			}
			frame = &spdyframe.SettingsFrame{FlagIdValues: vs}
		case 5:
			frame = &spdyframe.WindowUpdateFrame{StreamId: stream(), DeltaWindowSize: u32() & 0x7fffffff}
		case 6:
			frame = &spdyframe.HeadersFrame{StreamId: stream(), Headers: fuzzHeaderSets[int(op>>3&7)%len(fuzzHeaderSets)]}
		case 7:
			typ := uint16(operand())<<8 | uint16(operand())
			flags := operand()
			n := int(operand()) % 32
			payload := make([]byte, n)
			for j := range payload {
				payload[j] = operand()
			}
			buf.Write(appendControlHeader(nil, typ, flags, n))
			buf.Write(payload)
			clean = false
			continue
		}
		if err := fr.WriteFrame(frame); err != nil {
			continue // spdystream refuses it (a zero stream id): not sent
		}
		if after != nil {
			after()
		}
	}
	if !clean {
		model = nil
	}
	sc.in, sc.model, sc.opened = buf.Bytes(), model, opened
	return sc
}

// Sanity check of the op encoding, so that a change to buildFrames that
// stops producing frames shows up as a failure rather than a weaker fuzzer.
func TestBuildFrames(t *testing.T) {
	sc := buildFrames(t, []byte{0x00, 0x01, 0x00, 0x02, 'h', 'i', 0x02, 0, 0, 0, 3})
	fr, _ := spdyframe.NewFramer(io.Discard, bytes.NewReader(sc.in))
	var got []string
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		got = append(got, fmt.Sprintf("%T", f))
	}
	want := "[*spdy.SynStreamFrame *spdy.DataFrame *spdy.PingFrame]"
	if fmt.Sprint(got) != want || sc.model == nil || fmt.Sprint(sc.model.pings) != "[3]" || sc.model.lastID != 1 ||
		!sc.opened[1] || string(sc.data[1]) != "hi" {
		t.Fatalf("buildFrames: frames %v, %+v; want %s, pings [3], last 1, stream 1 data \"hi\"", got, sc, want)
	}
}
