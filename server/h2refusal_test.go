package server

import (
	"bytes"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestH2RefusalNotTakenIsReset: an HTTP/2 client that gives the daemon no
// flow-control window never takes the body of a refusal, and Go's server
// keeps the stream, and its handler's goroutine, until it does: without
// credentials, on any path, up to --max-streams-per-session streams per
// connection, with no timeout at all (the connection's idle timeout
// counts only connections with no open stream). A refusal not taken
// within the idle timeout is reset, as the metrics listener cuts a client
// that does not read its answer.
func TestH2RefusalNotTakenIsReset(t *testing.T) {
	s := New(Config{Resolver: fuzzResolver{}, Dialer: refusingDialer{},
		IdleConnTimeout: 200 * time.Millisecond, ReadHeaderTimeout: 200 * time.Millisecond,
		Limits: Limits{MaxHeaderBytes: 8 << 10}})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := s.NewHTTPServer()
	go hs.Serve(s.Listener(ln))
	t.Cleanup(func() { hs.Close() })

	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	// A window of 0: no DATA may come on any stream.
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	type refusal struct {
		what, method, path string
		header             [][2]string
	}
	refusals := []refusal{
		{"404 no route", "POST", "/wp-login.php", nil},
		{"405 GET", "GET", "/portForward/ns/pod?port=80", nil},
		{"400 invalid pod", "POST", "/portForward/NS!/pod?port=80", nil},
		{"404 unknown pod", "POST", "/portForward/ns/gone?port=80", nil},
		{"400 bad port", "POST", "/portForward/ns/pod?port=0", nil},
		{"500 resolve", "POST", "/portForward/ns/broken?port=80", nil},
		{"502 dial", "POST", "/portForward/ns/pod?port=80", nil},
		// Answered by Go's HTTP/2 server itself, not the daemon's handler.
		{"400 header HTTP/2 forbids", "POST", "/portForward/ns/pod?port=80", [][2]string{{"connection", "close"}}},
		{"431 header list over --max-header-bytes", "POST", "/portForward/ns/pod?port=80",
			slices.Repeat([][2]string{{"x-big", strings.Repeat("b", 1000)}}, 20)},
	}
	open := map[uint32]string{}
	for i, r := range refusals {
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range append([][2]string{{":method", r.method}, {":scheme", "http"}, {":authority", "node"}, {":path", r.path}}, r.header...) {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		id := uint32(2*i + 1)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
			t.Fatal(err)
		}
		open[id] = r.what
	}
	for len(open) > 0 {
		f, err := fr.ReadFrame()
		if err != nil {
			var left []string
			for _, what := range open {
				left = append(left, what)
			}
			t.Fatalf("read frame: %v; streams the daemon still holds with a refusal the client cannot take: %q", err, left)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			t.Fatalf("DATA on stream %d beyond a window of 0", f.StreamID)
		case *http2.RSTStreamFrame:
			delete(open, f.StreamID)
		}
	}
}
