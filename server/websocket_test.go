package server

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestParsePortQuery(t *testing.T) {
	tests := []struct {
		query   string
		want    []uint16
		wantErr string
	}{
		{"port=80", []uint16{80}, ""},
		{"port=80&port=90", []uint16{80, 90}, ""},
		{"port=80,90,100", []uint16{80, 90, 100}, ""},
		{"port=80,90&port=65535", []uint16{80, 90, 65535}, ""},
		{"", nil, `query parameter "port" is required`},
		{"ports=80", nil, `query parameter "port" is required`},
		{"port=", nil, `query parameter "port" cannot be empty`},
		{"port=abc", nil, `unable to parse "abc" as a port: `},
		{"port=-1", nil, `unable to parse "-1" as a port: `},
		{"port=65536", nil, `unable to parse "65536" as a port: `},
		{"port=80,", nil, `unable to parse "80," as a port: `},
		{"port=0", nil, `port "0" must be > 0`},
		{"port=80,0", nil, `port "80,0" must be > 0`},
		{"port=" + strings.Repeat("1,", 64) + "1", nil, "too many ports: at most 64 per connection"},
	}
	for _, tt := range tests {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		got, rerr := parsePortQuery(q)
		if tt.wantErr != "" {
			if rerr == nil || rerr.status != http.StatusBadRequest || !strings.HasPrefix(rerr.msg, tt.wantErr) {
				t.Errorf("parsePortQuery(%q): got %v, %+v; want 400 %q", tt.query, got, rerr, tt.wantErr)
			}
			continue
		}
		if rerr != nil || !slices.Equal(got, tt.want) {
			t.Errorf("parsePortQuery(%q): got %v, %+v; want %v", tt.query, got, rerr, tt.want)
		}
	}
}

func TestNegotiateWebSocket(t *testing.T) {
	tests := []struct {
		offered []string
		want    wsChoice
		ok      bool
	}{
		{nil, wsChoice{}, true},
		{[]string{"v4.channel.k8s.io"}, wsChoice{subprotocol: "v4.channel.k8s.io"}, true},
		{[]string{"v4.base64.channel.k8s.io, v4.channel.k8s.io"}, wsChoice{subprotocol: "v4.base64.channel.k8s.io", base64: true}, true},
		{[]string{"channel.k8s.io", "v4.channel.k8s.io"}, wsChoice{subprotocol: "v4.channel.k8s.io"}, true},
		{[]string{"v4.channel.k8s.io", "SPDY/3.1+portforward.k8s.io"}, wsChoice{subprotocol: "SPDY/3.1+portforward.k8s.io", tunnel: true}, true},
		{[]string{"SPDY/3.1+portforward.k8s.io"}, wsChoice{subprotocol: "SPDY/3.1+portforward.k8s.io", tunnel: true}, true},
		{[]string{"channel.k8s.io"}, wsChoice{}, false},
		{[]string{"SPDY/3.1+v9.portforward.k8s.io"}, wsChoice{}, false},
	}
	for _, tt := range tests {
		h := http.Header{}
		for _, v := range tt.offered {
			h.Add("Sec-WebSocket-Protocol", v)
		}
		got, rerr := negotiateWebSocket(h)
		if (rerr == nil) != tt.ok || got != tt.want {
			t.Errorf("negotiateWebSocket(%q): got %+v, %v; want %+v, ok=%v", tt.offered, got, rerr, tt.want, tt.ok)
		}
	}
}
