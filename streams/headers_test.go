package streams

import (
	"net/http"
	"strings"
	"testing"
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// added builds a header the way spdystream's reader does, with Add.
func added(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestParseStreamHeaders(t *testing.T) {
	tests := []struct {
		name    string
		h       http.Header
		id      uint32
		want    streamInfo
		wantErr string
	}{
		{"data", hdr("port", "80", "streamType", "data", "requestID", "7"), 5, streamInfo{port: 80, requestID: "7"}, ""},
		{"error", hdr("port", "65535", "streamType", "error", "requestID", "0"), 1, streamInfo{isError: true, port: 65535, requestID: "0"}, ""},
		{"lower-case names as spdy sends them", added("port", "8080", "streamtype", "data", "requestid", "3"), 3, streamInfo{port: 8080, requestID: "3"}, ""},
		{"legacy error stream uses its id", hdr("port", "80", "streamType", "error"), 1, streamInfo{isError: true, port: 80, requestID: "1"}, ""},
		{"legacy data stream uses id-2", hdr("port", "80", "streamType", "data"), 3, streamInfo{port: 80, requestID: "1"}, ""},
		{"missing port", hdr("streamType", "data"), 1, streamInfo{}, `"port" header is required`},
		{"port not a number", hdr("port", "abc", "streamType", "data"), 1, streamInfo{}, `unable to parse "abc" as a port: `},
		{"port negative", hdr("port", "-1", "streamType", "data"), 1, streamInfo{}, `unable to parse "-1" as a port: `},
		{"port too large", hdr("port", "65536", "streamType", "data"), 1, streamInfo{}, `unable to parse "65536" as a port: `},
		{"port zero", hdr("port", "0", "streamType", "data"), 1, streamInfo{}, `port "0" must be > 0`},
		{"missing type", hdr("port", "80"), 1, streamInfo{}, `"streamType" header is required`},
		{"bad type", hdr("port", "80", "streamType", "foo"), 1, streamInfo{}, `invalid stream type "foo"`},
		{"port checked before type", hdr("port", "x", "streamType", "foo"), 1, streamInfo{}, `unable to parse "x" as a port`},
		{"request id of 256 bytes", hdr("port", "80", "streamType", "data", "requestID", strings.Repeat("9", 256)), 1, streamInfo{port: 80, requestID: strings.Repeat("9", 256)}, ""},
		{"huge request id", hdr("port", "80", "streamType", "data", "requestID", strings.Repeat("9", 300)), 1, streamInfo{}, `"requestID" header is longer than 256 bytes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStreamHeaders(tt.h, tt.id)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("parseStreamHeaders(%v): got error %v, want prefix %q", tt.h, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseStreamHeaders(%v, %d): got %+v, %v; want %+v", tt.h, tt.id, got, err, tt.want)
			}
		})
	}
}
