package spdy

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	spdyframe "github.com/moby/spdystream/spdy"
)

// FuzzFrameHeader checks parseFrameHeader against the encoders: a header
// it parses re-encodes to the same eight bytes (control frames of version
// 3 and data frames, the only ones the engine writes), every field stays
// in its bit width, and what the encoders write parses back to the
// fields they were given.
func FuzzFrameHeader(f *testing.F) {
	f.Add(appendControlHeader(nil, typeSynStream, flagFin, 10+32), uint32(1), uint16(typeSynStream), uint8(0), uint32(42))
	f.Add(appendDataHeader(nil, 3, flagFin, 5), uint32(3), uint16(typePing), uint8(flagFin), uint32(5))
	f.Add([]byte{0x80, 0x02, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff}, uint32(0x7fffffff), uint16(0xffff), uint8(0xff), uint32(0xffffffff))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00}, uint32(0x80000001), uint16(0), uint8(0), uint32(1<<24))
	f.Fuzz(func(t *testing.T, b []byte, stream uint32, typ uint16, flags uint8, length uint32) {
		if len(b) >= frameHeaderLen {
			b = b[:frameHeaderLen]
			h := parseFrameHeader(b)
			if h.length > maxFrameLength || h.stream > maxStreamID || h.version > 0x7fff {
				t.Fatalf("parseFrameHeader(%x) = %+v: a field is wider than its bits", b, h)
			}
			if h.control != (b[0]&0x80 != 0) || h.flags != b[4] {
				t.Fatalf("parseFrameHeader(%x) = %+v: control bit or flags misread", b, h)
			}
			var re []byte
			switch {
			case !h.control:
				re = appendDataHeader(nil, h.stream, h.flags, int(h.length))
			case h.version == version:
				re = appendControlHeader(nil, h.typ, h.flags, int(h.length))
			}
			if re != nil && !bytes.Equal(re, b) {
				t.Fatalf("parseFrameHeader(%x) = %+v re-encodes to %x", b, h, re)
			}
		}

		length &= maxFrameLength
		if h := parseFrameHeader(appendControlHeader(nil, typ, flags, int(length))); !h.control ||
			h.version != version || h.typ != typ || h.flags != flags || h.length != length {
			t.Fatalf("appendControlHeader(%d, %#x, %d) parses to %+v", typ, flags, length, h)
		}
		if h := parseFrameHeader(appendDataHeader(nil, stream, flags, int(length))); h.control ||
			h.stream != stream&maxStreamID || h.flags != flags || h.length != length {
			t.Fatalf("appendDataHeader(%d, %#x, %d) parses to %+v", stream, flags, length, h)
		}
	})
}

// FuzzFrameEncoders decodes every frame the engine can write with
// spdystream's framer, the client side of every Kubernetes client: each
// must be one frame whose length field matches its payload, carrying the
// values it was built from.
func FuzzFrameEncoders(f *testing.F) {
	f.Add(uint32(1), uint32(statusCancel), []byte{})
	f.Add(uint32(0x7fffffff), uint32(1<<31), []byte("x"))
	f.Add(uint32(3), uint32(0), []byte{0x78, 0xbb, 0x00})
	f.Fuzz(func(t *testing.T, stream, value uint32, block []byte) {
		if len(block) > 1<<10 {
			return
		}
		stream &= maxStreamID
		one := func(name string, b []byte) spdyframe.Frame {
			t.Helper()
			if h := parseFrameHeader(b); int(h.length) != len(b)-frameHeaderLen {
				t.Fatalf("%s: length field %d for %d payload bytes", name, h.length, len(b)-frameHeaderLen)
			}
			fr, err := spdyframe.NewFramer(io.Discard, bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			got, err := fr.ReadFrame()
			if err != nil {
				return nil // values spdystream refuses (zero ids, status 0); checked below
			}
			return got
		}

		rst := one("RST_STREAM", appendRstStream(nil, stream, value))
		if stream != 0 && value != 0 {
			if r, ok := rst.(*spdyframe.RstStreamFrame); !ok || uint32(r.StreamId) != stream || uint32(r.Status) != value {
				t.Fatalf("RST_STREAM(%d, %d) decodes to %#v", stream, value, rst)
			}
		}
		ping := one("PING", appendPing(nil, value))
		if value != 0 {
			if p, ok := ping.(*spdyframe.PingFrame); !ok || p.Id != value {
				t.Fatalf("PING(%d) decodes to %#v", value, ping)
			}
		}
		if g, ok := one("GOAWAY", appendGoAway(nil, stream, value)).(*spdyframe.GoAwayFrame); !ok ||
			uint32(g.LastGoodStreamId) != stream || uint32(g.Status) != value {
			t.Fatalf("GOAWAY(%d, %d) decodes to %#v", stream, value, g)
		}
		if w, ok := one("WINDOW_UPDATE", appendWindowUpdate(nil, stream, value)).(*spdyframe.WindowUpdateFrame); !ok ||
			uint32(w.StreamId) != stream || w.DeltaWindowSize != value&0x7fffffff {
			t.Fatalf("WINDOW_UPDATE(%d, %d) decodes to %#v", stream, value, w)
		}
		id := binary.BigEndian.Uint32(append(block, 0, 0, 0, 0)) & 0xffffff
		if s, ok := one("SETTINGS", appendSettings(nil, id, value)).(*spdyframe.SettingsFrame); !ok ||
			len(s.FlagIdValues) != 1 || uint32(s.FlagIdValues[0].Id) != id || s.FlagIdValues[0].Value != value {
			t.Fatalf("SETTINGS(%d=%d) decodes to %#v", id, value, s)
		}

		// SYN_REPLY carries the connection's compressed header block; the
		// engine always sends the empty one, which must inflate to no
		// headers in spdystream's decompressor, reply after reply.
		var hw headerWriter
		var wire []byte
		for range 3 {
			wire = appendSynReply(wire, stream|1, hw.emptyBlock())
		}
		fr, err := spdyframe.NewFramer(io.Discard, bytes.NewReader(wire))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			got, err := fr.ReadFrame()
			r, ok := got.(*spdyframe.SynReplyFrame)
			if err != nil || !ok || uint32(r.StreamId) != stream|1 || len(r.Headers) != 0 {
				t.Fatalf("SYN_REPLY %d on stream %d decodes to %#v, %v", i, stream|1, got, err)
			}
		}
		// Any block is framed with the right length, whatever it holds.
		one("SYN_REPLY", appendSynReply(nil, stream, block))
	})
}
