package streams

import (
	"net/http"
	"strconv"
	"testing"
)

// FuzzParseStreamHeaders checks parseStreamHeaders against what it
// promises: a stream it accepts has a port in 1..65535 that is the header's
// decimal value, the stream type the header names, and a request ID of at
// most maxRequestIDLen bytes; without a request ID, an error stream and
// the data stream two ids later pair up, as old clients open them.
func FuzzParseStreamHeaders(f *testing.F) {
	// What client-go sends (error stream first), the kubelet tests' forms,
	// and pre-2016 clients without requestID.
	f.Add("8080", "error", "0", true, uint32(1))
	f.Add("8080", "data", "0", true, uint32(3))
	f.Add("65535", "data", "", false, uint32(7))
	f.Add("0", "data", "", false, uint32(1))
	f.Add("65536", "error", "1", true, uint32(1))
	f.Add("+80", "data", "", false, uint32(1))
	f.Add("080", "dAta", "", false, uint32(0xffffffff))
	f.Add("abc", "", "x", true, uint32(0))
	f.Fuzz(func(t *testing.T, port, streamType, requestID string, hasRequestID bool, id uint32) {
		h := http.Header{}
		h.Set(HeaderPort, port)
		h.Set(HeaderStreamType, streamType)
		if hasRequestID {
			h.Set(HeaderRequestID, requestID)
		}
		info, err := parseStreamHeaders(h, id)
		n, perr := strconv.ParseUint(port, 10, 16)
		validType := streamType == StreamTypeData || streamType == StreamTypeError
		if err != nil {
			if perr == nil && n > 0 && validType && len(h.Get(HeaderRequestID)) <= maxRequestIDLen {
				t.Fatalf("parseStreamHeaders(port %q, streamType %q, requestID %q, id %d): %v, want accepted", port, streamType, requestID, id, err)
			}
			return
		}
		if perr != nil || n == 0 || uint64(info.port) != n {
			t.Fatalf("parseStreamHeaders(port %q): port %d accepted", port, info.port)
		}
		if !validType || info.isError != (streamType == StreamTypeError) {
			t.Fatalf("parseStreamHeaders(streamType %q): isError %v accepted", streamType, info.isError)
		}
		if len(info.requestID) > maxRequestIDLen || info.requestID == "" {
			t.Fatalf("parseStreamHeaders(requestID %q, id %d): request ID %q", requestID, id, info.requestID)
		}
		if rid := h.Get(HeaderRequestID); rid != "" && info.requestID != rid {
			t.Fatalf("parseStreamHeaders(requestID %q): request ID %q", rid, info.requestID)
		}
		if h.Get(HeaderRequestID) != "" || !info.isError || id > 0xffffffff-2 {
			return
		}
		// An old client's pair: this error stream, then its data stream.
		h.Set(HeaderStreamType, StreamTypeData)
		data, err := parseStreamHeaders(h, id+2)
		if err != nil || data.requestID != info.requestID {
			t.Fatalf("error stream %d has request ID %q, data stream %d %q, %v: they must pair", id, info.requestID, id+2, data.requestID, err)
		}
	})
}
