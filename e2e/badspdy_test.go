package e2e

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	mobyspdy "github.com/moby/spdystream/spdy"
	"k8s.io/client-go/tools/portforward"
)

// Hand-made SPDY/3 for the bad-input suite: frames built byte by byte, sent
// over a hand-made upgrade or through the WebSocket tunnel, and the
// daemon's frames read back raw.

// SPDY/3 frame types and status codes (draft-mbelshe-httpbis-spdy-00).
const (
	spdySynStream = 1
	spdySynReply  = 2
	spdyRstStream = 3
	spdySettings  = 4
	spdyPing      = 6
	spdyGoAway    = 7
	spdyHeaders   = 8

	spdyFlagFin = 0x01

	rstProtocolError = 1
	rstInvalidStream = 2
	rstCancel        = 5

	goAwayProtocolError = 1
)

func ctrlHeader(version, typ uint16, flags uint8, length int) []byte {
	b := binary.BigEndian.AppendUint32(nil, 0x80000000|uint32(version)<<16|uint32(typ))
	return binary.BigEndian.AppendUint32(b, uint32(flags)<<24|uint32(length))
}

func ctrlFrame(typ uint16, flags uint8, payload []byte) []byte {
	return append(ctrlHeader(3, typ, flags, len(payload)), payload...)
}

func dataFrame(stream uint32, flags uint8, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, stream&0x7fffffff)
	b = binary.BigEndian.AppendUint32(b, uint32(flags)<<24|uint32(len(payload)))
	return append(b, payload...)
}

func pingFrame(id uint32) []byte {
	return ctrlFrame(spdyPing, 0, binary.BigEndian.AppendUint32(nil, id))
}

// settingsFrame carries n entries (INITIAL_WINDOW_SIZE, 64 KiB).
func settingsFrame(n int) []byte {
	p := binary.BigEndian.AppendUint32(make([]byte, 0, 4+8*n), uint32(n))
	for range n {
		p = binary.BigEndian.AppendUint32(p, 7)
		p = binary.BigEndian.AppendUint32(p, 64<<10)
	}
	return ctrlFrame(spdySettings, 0, p)
}

func synStreamFrame(id uint32, flags uint8, block []byte) []byte {
	p := binary.BigEndian.AppendUint32(nil, id)
	p = binary.BigEndian.AppendUint32(p, 0) // associated stream
	p = append(p, 0, 0)                     // priority, slot
	return ctrlFrame(spdySynStream, flags, append(p, block...))
}

// rawHeaders is an uncompressed SPDY/3 header block: a count, then length-
// prefixed names and values.
func rawHeaders(kv ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(kv)/2))
	for _, s := range kv {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

func portHeaders(streamType, port, requestID string) []byte {
	return rawHeaders("streamtype", streamType, "port", port, "requestid", requestID)
}

// spdyFrame is one frame the daemon sent.
type spdyFrame struct {
	control bool
	typ     uint16 // control frames
	stream  uint32 // data frames, and the stream of SYN_REPLY and RST_STREAM
	flags   uint8
	payload []byte
}

func (f spdyFrame) u32(i int) uint32 {
	if len(f.payload) < i+4 {
		return 0
	}
	return binary.BigEndian.Uint32(f.payload[i:])
}

func (f spdyFrame) String() string {
	if !f.control {
		return fmt.Sprintf("DATA(stream %d, %d bytes, flags %#x)", f.stream, len(f.payload), f.flags)
	}
	switch f.typ {
	case spdySynReply:
		return fmt.Sprintf("SYN_REPLY(%d)", f.stream)
	case spdyRstStream:
		return fmt.Sprintf("RST_STREAM(%d, status %d)", f.stream, f.u32(4))
	case spdyGoAway:
		return fmt.Sprintf("GOAWAY(last %d, status %d)", f.u32(0), f.u32(4))
	case spdyPing:
		return fmt.Sprintf("PING(%d)", f.u32(0))
	}
	return fmt.Sprintf("control type %d (%d bytes)", f.typ, len(f.payload))
}

// rawSPDY is a hand-driven SPDY client connection: over a hand-made upgrade
// ("spdy") or through the WebSocket tunnel ("tunnel").
type rawSPDY struct {
	t          *testing.T
	nc         net.Conn
	tcp        net.Conn // the TCP connection under nc
	br         *bufio.Reader
	closeWrite func() error
	zbuf       bytes.Buffer
	zw         *zlib.Writer // the connection's one header compression context
	nextID     uint32       // next client stream id
	pingID     uint32
	requests   int
}

var spdyTransports = []string{"spdy", "tunnel"}

func dialRawSPDY(t *testing.T, d *daemon, route, transport string) *rawSPDY {
	t.Helper()
	s := &rawSPDY{t: t, nextID: 1, pingID: 1}
	switch transport {
	case "spdy":
		c, err := net.Dial("tcp4", d.addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n", route)
		s.br = bufio.NewReaderSize(c, 64<<10)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(s.br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("SPDY upgrade: %v %v", resp, err)
		}
		s.nc, s.tcp, s.closeWrite = c, c, c.(*net.TCPConn).CloseWrite
	case "tunnel":
		dialer := websocket.Dialer{Subprotocols: []string{"SPDY/3.1+portforward.k8s.io"}, HandshakeTimeout: 30 * time.Second,
			NetDial: func(network, addr string) (net.Conn, error) {
				c, err := net.Dial(network, addr)
				s.tcp = c
				return c, err
			}}
		ws, _, err := dialer.Dial("ws://"+d.addr+route, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ws.Subprotocol() != "SPDY/3.1+portforward.k8s.io" {
			t.Fatalf("tunnel subprotocol %q", ws.Subprotocol())
		}
		s.nc = portforward.NewTunnelingConnection("bad-input", ws)
		s.br = bufio.NewReaderSize(s.nc, 64<<10)
		s.closeWrite = func() error {
			return ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		}
	default:
		t.Fatalf("transport %q", transport)
	}
	t.Cleanup(func() { s.nc.Close() })
	return s
}

// send writes frames in one write (one WebSocket message in the tunnel).
// A failed write is only logged: the daemon may close a connection while
// the rest of a bad frame is still on its way, and what it sent before
// closing is still there to read.
func (s *rawSPDY) send(frames ...[]byte) error {
	s.t.Helper()
	s.nc.SetWriteDeadline(time.Now().Add(60 * time.Second))
	_, err := s.nc.Write(bytes.Join(frames, nil))
	if err != nil {
		s.t.Logf("send: %v", err)
	}
	return err
}

// block compresses a raw header block in the connection's zlib context.
// It uses no preset dictionary: a zlib stream without FDICT is valid for
// the daemon's inflater, and the raw bytes stay under the test's control.
func (s *rawSPDY) block(raw []byte) []byte {
	s.zbuf.Reset()
	if s.zw == nil {
		s.zw = zlib.NewWriter(&s.zbuf)
	}
	s.zw.Write(raw)
	s.zw.Flush()
	return bytes.Clone(s.zbuf.Bytes())
}

// id takes the next client stream id.
func (s *rawSPDY) id() uint32 {
	id := s.nextID
	s.nextID += 2
	return id
}

func (s *rawSPDY) readFrame(timeout time.Duration) (spdyFrame, error) {
	s.nc.SetReadDeadline(time.Now().Add(timeout))
	var hdr [8]byte
	if _, err := io.ReadFull(s.br, hdr[:]); err != nil {
		return spdyFrame{}, err
	}
	w0, w1 := binary.BigEndian.Uint32(hdr[:4]), binary.BigEndian.Uint32(hdr[4:])
	f := spdyFrame{control: w0&0x80000000 != 0, flags: uint8(w1 >> 24)}
	if f.control {
		f.typ = uint16(w0)
	} else {
		f.stream = w0 & 0x7fffffff
	}
	f.payload = make([]byte, w1&0xffffff)
	if _, err := io.ReadFull(s.br, f.payload); err != nil {
		return spdyFrame{}, err
	}
	if f.control && (f.typ == spdySynReply || f.typ == spdyRstStream) {
		f.stream = f.u32(0) & 0x7fffffff
	}
	return f, nil
}

// expect reads frames until one matches; a GOAWAY or the end of the
// connection before that fails the test.
func (s *rawSPDY) expect(what string, match func(spdyFrame) bool) spdyFrame {
	s.t.Helper()
	for {
		f, err := s.readFrame(30 * time.Second)
		if err != nil {
			s.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return f
		}
		if f.control && f.typ == spdyGoAway {
			s.t.Fatalf("waiting for %s: got %v", what, f)
		}
	}
}

func (s *rawSPDY) expectRST(stream, status uint32) {
	s.t.Helper()
	f := s.expect(fmt.Sprintf("RST_STREAM(%d, status %d)", stream, status), func(f spdyFrame) bool {
		return f.control && (f.typ == spdyRstStream || f.typ == spdySynReply) && f.stream == stream
	})
	if f.typ != spdyRstStream || f.u32(4) != status {
		s.t.Fatalf("stream %d: got %v, want RST_STREAM status %d", stream, f, status)
	}
}

// expectGoAway waits for GOAWAY with status, then for the daemon to close
// the connection.
func (s *rawSPDY) expectGoAway(status uint32) {
	s.t.Helper()
	f := s.expect(fmt.Sprintf("GOAWAY(status %d)", status), func(f spdyFrame) bool { return f.control && f.typ == spdyGoAway })
	if f.u32(4) != status {
		s.t.Fatalf("got %v, want GOAWAY status %d", f, status)
	}
	s.expectClosed()
}

// expectClosed reads until the daemon closes the connection.
func (s *rawSPDY) expectClosed() {
	s.t.Helper()
	for {
		_, err := s.readFrame(30 * time.Second)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.t.Fatal("the daemon did not close the connection within 30 s")
		}
		if err != nil {
			return
		}
	}
}

// alive checks that the session still answers a PING.
func (s *rawSPDY) alive() {
	s.t.Helper()
	id := s.pingID
	s.pingID += 2
	s.send(pingFrame(id))
	s.expect(fmt.Sprintf("PING(%d)", id), func(f spdyFrame) bool { return f.control && f.typ == spdyPing && f.u32(0) == id })
}

// echoPair opens an error and a data stream to an echo server in the pod
// and checks that the payload comes back: the session still forwards.
func (s *rawSPDY) echoPair(port int) {
	s.t.Helper()
	s.requests++
	req := "good-" + strconv.Itoa(s.requests)
	errID, dataID := s.id(), s.id()
	s.send(synStreamFrame(errID, 0, s.block(portHeaders("error", strconv.Itoa(port), req))))
	s.expect(fmt.Sprintf("SYN_REPLY(%d)", errID), func(f spdyFrame) bool { return s.replyOrReset(f, errID) })
	s.send(dataFrame(errID, spdyFlagFin, nil))
	payload := fmt.Appendf(nil, "still forwarding %s", req)
	s.send(synStreamFrame(dataID, 0, s.block(portHeaders("data", strconv.Itoa(port), req))))
	s.expect(fmt.Sprintf("SYN_REPLY(%d)", dataID), func(f spdyFrame) bool { return s.replyOrReset(f, dataID) })
	s.send(dataFrame(dataID, spdyFlagFin, payload))
	var got []byte
	s.expect(fmt.Sprintf("the echo on stream %d", dataID), func(f spdyFrame) bool {
		if f.control && f.typ == spdyRstStream && (f.stream == dataID || f.stream == errID) {
			s.t.Fatalf("echo pair reset: %v", f)
		}
		if !f.control && f.stream == dataID {
			got = append(got, f.payload...)
			return f.flags&spdyFlagFin != 0
		}
		return false
	})
	if !bytes.Equal(got, payload) {
		s.t.Fatalf("echo: got %q, want %q", got, payload)
	}
}

func (s *rawSPDY) replyOrReset(f spdyFrame, id uint32) bool {
	if f.control && f.typ == spdyRstStream && f.stream == id {
		s.t.Fatalf("stream %d refused: %v", id, f)
	}
	return f.control && f.typ == spdySynReply && f.stream == id
}

// spdyCase is one malformed-input case; it runs on a fresh connection
// over each SPDY transport.
type spdyCase struct {
	name, outcome string
	run           func(t *testing.T, s *rawSPDY, echoPort int)
}

var spdyCases = []spdyCase{
	{"control frame of version 2", "GOAWAY(PROTOCOL_ERROR), closed", func(t *testing.T, s *rawSPDY, _ int) {
		s.send(append(ctrlHeader(2, spdySynStream, 0, 10), make([]byte, 10)...))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"control frame of version 0x7fff", "GOAWAY(PROTOCOL_ERROR), closed", func(t *testing.T, s *rawSPDY, _ int) {
		s.send(append(ctrlHeader(0x7fff, spdyPing, 0, 4), 0, 0, 0, 1))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"unknown control frame types", "ignored; session goes on", func(t *testing.T, s *rawSPDY, echo int) {
		for _, typ := range []uint16{0, 5, 10, 11, 12, 100, 0xffff} {
			s.send(ctrlFrame(typ, 0xff, bytes.Repeat([]byte{0xee}, 100)))
		}
		s.alive()
		s.echoPair(echo)
	}},
	{"control frame length 16 MiB - 1 (cap 64 KiB)", "GOAWAY(PROTOCOL_ERROR), closed (payload never read)", func(t *testing.T, s *rawSPDY, _ int) {
		s.send(append(ctrlHeader(3, spdySettings, 0, 1<<24-1), make([]byte, 1024)...))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"SYN_STREAM of 64 KiB + 1", "GOAWAY(PROTOCOL_ERROR), closed", func(t *testing.T, s *rawSPDY, _ int) {
		s.send(synStreamFrame(s.id(), 0, make([]byte, 64<<10+1-10)))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"control frames shorter than their fields", "GOAWAY(PROTOCOL_ERROR), closed", func(t *testing.T, s *rawSPDY, _ int) {
		s.send(ctrlFrame(spdyRstStream, 0, []byte{0, 0, 0}))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"truncated header block", "GOAWAY(PROTOCOL_ERROR), closed", func(t *testing.T, s *rawSPDY, echo int) {
		b := s.block(portHeaders("data", strconv.Itoa(echo), "1"))
		s.send(synStreamFrame(s.id(), 0, b[:len(b)/2]))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"corrupt header block", "GOAWAY(PROTOCOL_ERROR), closed", func(t *testing.T, s *rawSPDY, _ int) {
		s.send(synStreamFrame(s.id(), 0, bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 64)))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"frame cut off by the end of the connection", "closed", func(t *testing.T, s *rawSPDY, _ int) {
		s.send(append(ctrlHeader(3, spdySynStream, 0, 1000), make([]byte, 10)...))
		s.closeWrite()
		s.expectClosed()
	}},
	{"zlib bomb: 1 KiB inflating to 1 MiB", "GOAWAY(PROTOCOL_ERROR), closed (inflation stops at 64 KiB)", func(t *testing.T, s *rawSPDY, _ int) {
		b := s.block(rawHeaders("x", strings.Repeat("a", 1<<20)))
		if len(b) > 4<<10 {
			t.Fatalf("bomb block is %d bytes", len(b))
		}
		s.send(synStreamFrame(s.id(), 0, b))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"zlib bomb with the SPDY/3 dictionary (spdystream Framer): 16 MiB header", "GOAWAY(PROTOCOL_ERROR), closed (inflation stops at 64 KiB)", func(t *testing.T, s *rawSPDY, _ int) {
		var buf bytes.Buffer
		fr, err := mobyspdy.NewFramer(&buf, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := fr.WriteFrame(&mobyspdy.SynStreamFrame{StreamId: 1, Headers: http.Header{"x": {strings.Repeat("a", 16<<20)}}}); err != nil {
			t.Fatal(err)
		}
		frame := buf.Bytes()
		if len(frame) > 64<<10 || frame[18+1]&0x20 == 0 {
			t.Fatalf("Framer wrote %d bytes, zlib flags %#x: want a small block with a preset dictionary", len(frame), frame[19])
		}
		s.send(frame)
		s.expectGoAway(goAwayProtocolError)
	}},
	{"HEADERS frame inflating to 1 MiB", "GOAWAY(PROTOCOL_ERROR), closed (inflation stops at 64 KiB)", func(t *testing.T, s *rawSPDY, echo int) {
		s.echoPair(echo)
		p := binary.BigEndian.AppendUint32(nil, 1)
		s.send(ctrlFrame(spdyHeaders, 0, append(p, s.block(rawHeaders("x", strings.Repeat("a", 1<<20)))...)))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"header count 2^32 - 1 in a 4-byte block", "GOAWAY(PROTOCOL_ERROR), closed", func(t *testing.T, s *rawSPDY, _ int) {
		s.send(synStreamFrame(s.id(), 0, s.block([]byte{0xff, 0xff, 0xff, 0xff})))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"100,000 empty headers (inflating past the cap)", "GOAWAY(PROTOCOL_ERROR), closed", func(t *testing.T, s *rawSPDY, _ int) {
		raw := binary.BigEndian.AppendUint32(nil, 100000)
		raw = append(raw, make([]byte, 8*100000)...)
		s.send(synStreamFrame(s.id(), 0, s.block(raw)))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"1,000 headers (cap 64) on one stream", "that stream reset (RST_STREAM PROTOCOL_ERROR), session goes on", func(t *testing.T, s *rawSPDY, echo int) {
		var kv []string
		for i := range 1000 {
			kv = append(kv, "h"+strconv.Itoa(i), "v")
		}
		id := s.id()
		s.send(synStreamFrame(id, 0, s.block(rawHeaders(kv...))))
		s.expectRST(id, rstProtocolError)
		s.echoPair(echo)
	}},
	{"header field of 17 KiB (cap 16 KiB)", "that stream reset (RST_STREAM PROTOCOL_ERROR), session goes on", func(t *testing.T, s *rawSPDY, echo int) {
		id := s.id()
		s.send(synStreamFrame(id, 0, s.block(rawHeaders("streamtype", "data", "port", "80", "requestid", strings.Repeat("r", 17<<10)))))
		s.expectRST(id, rstProtocolError)
		s.echoPair(echo)
	}},
	{"bad stream headers", "each stream reset (RST_STREAM CANCEL), session goes on", func(t *testing.T, s *rawSPDY, echo int) {
		for _, h := range [][]byte{
			portHeaders("data", "0", "a"), portHeaders("data", "65536", "b"), portHeaders("data", "-1", "c"),
			portHeaders("data", "abc", "d"), portHeaders("data", "\x0080", "e"), portHeaders("data", "", "f"),
			portHeaders("dta", "80", "g"), rawHeaders("port", "80", "requestid", "h"),
			portHeaders("data", "80", strings.Repeat("i", 257)),
		} {
			id := s.id()
			s.send(synStreamFrame(id, 0, s.block(h)))
			s.expectRST(id, rstCancel)
		}
		s.echoPair(echo)
	}},
	{"DATA for streams never opened", "RST_STREAM(INVALID_STREAM) above the last id, dropped below it; session goes on", func(t *testing.T, s *rawSPDY, echo int) {
		s.send(dataFrame(999, 0, []byte("nobody's")))
		s.expectRST(999, rstInvalidStream)
		s.nextID = 1001
		s.echoPair(echo)
		// Below the last id: a stream that is gone; dropped silently.
		s.send(dataFrame(501, spdyFlagFin, bytes.Repeat([]byte{1}, 1<<20)))
		s.alive()
		s.echoPair(echo)
	}},
	{"DATA of 16 MiB - 1 for an unknown stream", "dropped; session goes on", func(t *testing.T, s *rawSPDY, echo int) {
		s.echoPair(echo) // lastID > 1: stream 1 is below it and gone
		s.send(dataFrame(1, 0, make([]byte, 1<<24-1)))
		s.alive()
		s.echoPair(echo)
	}},
	{"SYN_STREAM for stream 0", "GOAWAY(PROTOCOL_ERROR), closed", func(t *testing.T, s *rawSPDY, echo int) {
		s.send(synStreamFrame(0, 0, s.block(portHeaders("data", strconv.Itoa(echo), "zero"))))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"DATA on stream 0", "GOAWAY(PROTOCOL_ERROR), closed", func(t *testing.T, s *rawSPDY, _ int) {
		s.send(dataFrame(0, 0, []byte("zero")))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"stream id reuse and regression", "each RST_STREAM(PROTOCOL_ERROR); session goes on", func(t *testing.T, s *rawSPDY, echo int) {
		s.echoPair(echo) // streams 1 and 3
		last := s.nextID - 2
		for _, id := range []uint32{last, last - 2, 2, last + 1} { // reuse, lower, even, even above
			s.send(synStreamFrame(id, 0, s.block(portHeaders("data", strconv.Itoa(echo), "x"+strconv.Itoa(int(id))))))
			s.expectRST(id, rstProtocolError)
		}
		s.nextID = 1001
		s.echoPair(echo)
		for _, id := range []uint32{1001, 999} { // regression after a jump
			s.send(synStreamFrame(id, 0, s.block(portHeaders("data", strconv.Itoa(echo), "y"+strconv.Itoa(int(id))))))
			s.expectRST(id, rstProtocolError)
		}
		s.nextID = 2001
		s.echoPair(echo)
	}},
	{"SETTINGS flood: 2,000 frames of 8,191 entries", "ignored; session goes on", func(t *testing.T, s *rawSPDY, echo int) {
		f := settingsFrame(8191)
		batch := bytes.Repeat(f, 16) // 1 MiB per write
		for range 2000 / 16 {
			s.send(batch)
		}
		s.alive()
		s.echoPair(echo)
	}},
	{"SETTINGS flood: 200,000 one-entry frames", "ignored; session goes on", func(t *testing.T, s *rawSPDY, echo int) {
		batch := bytes.Repeat(settingsFrame(1), 10000)
		for range 20 {
			s.send(batch)
		}
		s.alive()
		s.echoPair(echo)
	}},
	{"SETTINGS claiming 2^32 - 1 entries", "GOAWAY(PROTOCOL_ERROR), closed", func(t *testing.T, s *rawSPDY, _ int) {
		s.send(ctrlFrame(spdySettings, 0, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 7, 0, 0, 0, 1}))
		s.expectGoAway(goAwayProtocolError)
	}},
	{"PING flood, replies read", "all answered; session goes on", func(t *testing.T, s *rawSPDY, echo int) {
		const n = 200000
		pongs := make(chan error, 1)
		go func() {
			seen := 0
			for seen < n {
				f, err := s.readFrame(60 * time.Second)
				if err != nil {
					pongs <- fmt.Errorf("after %d replies: %w", seen, err)
					return
				}
				if f.control && f.typ == spdyPing {
					seen++
				}
			}
			pongs <- nil
		}()
		for i := 0; i < n; i += 10000 {
			var b []byte
			for j := range 10000 {
				b = append(b, pingFrame(uint32(2*(i+j)+1))...)
			}
			s.send(b)
		}
		if err := <-pongs; err != nil {
			t.Fatalf("PING replies: %v", err)
		}
		s.pingID = 2*n + 1
		s.alive()
		s.echoPair(echo)
	}},
}

// spdyFloodCases send much more than the daemon can answer while the
// client reads nothing: each frame makes the daemon queue a reply.
var spdyFloodCases = []struct {
	name  string
	frame func(i int) []byte
	reply uint16
}{
	{"PING flood, replies unread (64 MiB of PINGs)", func(i int) []byte { return pingFrame(uint32(2*i + 1)) }, spdyPing},
	{"DATA for unknown streams, RST_STREAMs unread (64 MiB)", func(i int) []byte { return dataFrame(uint32(2*i+1), 0, nil) }, spdyRstStream},
}

// spdyFlood sends 64 MiB of frames that each ask for a reply, reading none,
// then reads what comes back. The daemon may answer everything (then the
// session must still work) or give up on a client that does not read its
// answers: GOAWAY(INTERNAL_ERROR) if it can still be written, and the
// connection closed. Either way within bounded memory.
func spdyFlood(t *testing.T, s *rawSPDY, echo int, frame func(i int) []byte, reply uint16) string {
	const total = 64 << 20
	n := total / len(frame(0))
	var batch []byte
	sent := 0
	for i := range n {
		batch = append(batch, frame(i)...)
		if len(batch) >= 1<<20 || i == n-1 {
			if s.send(batch) != nil {
				break // the daemon gave up on us
			}
			sent += len(batch)
			batch = batch[:0]
		}
	}
	replies := 0
	var end string
	for replies < n && end == "" {
		f, err := s.readFrame(60 * time.Second)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			t.Fatalf("after %d of %d replies: no frame and no close for 60 s", replies, n)
		case err != nil:
			end = "connection closed (" + err.Error() + ")"
		case f.control && f.typ == reply:
			replies++
		case f.control && f.typ == spdyGoAway:
			if f.u32(4) != 2 {
				t.Fatalf("after %d of %d replies: %v, want status INTERNAL_ERROR (2)", replies, n, f)
			}
			s.expectClosed()
			end = "GOAWAY(INTERNAL_ERROR), closed"
		}
	}
	if end == "" {
		s.nextID = uint32(2*n + 1)
		s.pingID = uint32(2*n + 1)
		s.alive()
		s.echoPair(echo)
		return fmt.Sprintf("all %d replies; session goes on", n)
	}
	t.Logf("%d of %d frames sent (%d MiB), %d replies read, then %s", sent/len(frame(0)), n, sent>>20, replies, end)
	return fmt.Sprintf("cut off after %d MiB sent, %d replies: %s", sent>>20, replies, end)
}

// unpairedStreams opens 10,000 data streams with no error stream on one
// session. The daemon holds at most limit pairs waiting and refuses the
// rest with RST_STREAM. The held streams then get 16 KiB of data each,
// which the daemon must buffer within its budgets; once the creation
// timeout has ended the waiting ones, the same session forwards again.
func unpairedStreams(t *testing.T, s *rawSPDY, echo, limit int, creationTimeout time.Duration) string {
	const n, perStream = 10000, 16 << 10
	var batch []byte
	for i := range n {
		batch = append(batch, synStreamFrame(s.id(), 0, s.block(portHeaders("data", strconv.Itoa(echo), "unpaired-"+strconv.Itoa(i))))...)
		if len(batch) > 64<<10 || i == n-1 {
			s.send(batch)
			batch = batch[:0]
		}
	}
	sent := time.Now()
	// A stream is answered with SYN_REPLY (held, waiting for its pair) or
	// RST_STREAM CANCEL (refused); a held one is reset later, when its
	// creation timeout ends.
	replied := map[uint32]bool{}
	refused, expired := 0, 0
	count := func(f spdyFrame) {
		switch {
		case f.control && f.typ == spdySynReply:
			replied[f.stream] = true
		case f.control && f.typ == spdyRstStream && replied[f.stream]:
			expired++
		case f.control && f.typ == spdyRstStream && f.u32(4) == rstCancel:
			refused++
		case f.control && f.typ == spdyRstStream:
			t.Fatalf("unexpected %v", f)
		}
	}
	s.expect("an answer to every stream", func(f spdyFrame) bool {
		count(f)
		return len(replied)+refused == n
	})
	if len(replied) != limit || refused != n-limit {
		t.Fatalf("of %d unpaired streams %d were held (SYN_REPLY) and %d refused (RST_STREAM CANCEL); want %d and %d",
			n, len(replied), refused, limit, n-limit)
	}
	payload := make([]byte, perStream)
	for id := range replied {
		batch = append(batch, dataFrame(id, 0, payload)...)
		if len(batch) >= 1<<20 {
			s.send(batch)
			batch = batch[:0]
		}
	}
	s.send(batch)
	s.alive()
	if expired < len(replied) {
		s.expect(fmt.Sprintf("the %d held streams reset at the creation timeout", len(replied)), func(f spdyFrame) bool {
			count(f)
			return expired == len(replied)
		})
	}
	waited := time.Since(sent)
	if waited > creationTimeout+10*time.Second {
		t.Errorf("the held streams ended %v after the last was sent; creation timeout %v", waited, creationTimeout)
	}
	s.echoPair(echo)
	return fmt.Sprintf("%d held (SYN_REPLY) and given %d KiB each, %d refused with RST_STREAM(CANCEL); the held ones reset %v later (creation timeout %v); the same session forwards again",
		len(replied), perStream>>10, refused, waited.Round(100*time.Millisecond), creationTimeout)
}

// TestIncompletePairCountedAtSessionEnd: a pair whose second stream never
// came is counted as rejected when its session ends, as every stream that
// never became a forwarded connection is, over SPDY and the tunnel.
func TestIncompletePairCountedAtSessionEnd(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	for _, tr := range spdyTransports {
		t.Run(tr, func(t *testing.T) {
			protocol := map[string]string{"spdy": "spdy", "tunnel": "spdy_websocket"}[tr]
			series := fmt.Sprintf(`portforwardd_streams_total{protocol=%q,result="rejected"}`, protocol)
			before := d.metric(t, series)
			s := dialRawSPDY(t, d, p.route(), tr)
			id := s.id()
			s.send(synStreamFrame(id, 0, s.block(portHeaders("data", strconv.Itoa(port(ln)), "alone"))))
			s.expect(fmt.Sprintf("SYN_REPLY(%d)", id), func(f spdyFrame) bool { return s.replyOrReset(f, id) })
			s.nc.Close()
			eventually(t, 10*time.Second, func() (bool, string) {
				got := d.metric(t, series)
				return got == before+1, fmt.Sprintf("%s = %v after the session ended, want %v", series, got, before+1)
			})
		})
	}
}
