package spdy

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
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

// fuzzConn is a net.Conn that reads a fixed input and discards writes.
type fuzzConn struct {
	r *bytes.Reader
	net.Conn
}

func (c fuzzConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c fuzzConn) Write(p []byte) (int, error) { return len(p), nil }
func (c fuzzConn) Close() error                { return nil }

// FuzzConn runs a whole connection over arbitrary client bytes: it must
// end (at EOF at the latest) without panicking, with no bytes left
// accounted as buffered.
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
	f.Fuzz(func(t *testing.T, in []byte) {
		var consumers sync.WaitGroup
		c := Serve(fuzzConn{r: bytes.NewReader(in)}, func(s *Stream) error {
			consumers.Go(func() { io.Copy(io.Discard, s) })
			return nil
		}, Options{StreamBuffer: 4 << 10, ConnBuffer: 16 << 10, StallTimeout: 10 * time.Millisecond})
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("connection did not end at EOF")
		}
		// Every stream's reads end once the connection has (EOF or reset);
		// then nothing may be left accounted.
		consumers.Wait()
		if b := c.buffered.Load(); b != 0 {
			t.Fatalf("%d bytes still accounted as buffered", b)
		}
	})
}
