package server

import (
	"net/http"
	"strings"
	"testing"
)

func TestNegotiateProtocol(t *testing.T) {
	tests := []struct {
		name       string
		values     []string
		want       string
		wantStatus int
		wantMsg    string
	}{
		{"exact", []string{"portforward.k8s.io"}, "portforward.k8s.io", 0, ""},
		{"client order, comma list", []string{"v2.portforward.k8s.io, portforward.k8s.io"}, "portforward.k8s.io", 0, ""},
		{"repeated headers", []string{"x", "portforward.k8s.io"}, "portforward.k8s.io", 0, ""},
		{"missing", nil, "", 400, "unable to upgrade: header X-Stream-Protocol-Version does not exist"},
		{"empty", []string{" , "}, "", 400, "unable to upgrade: header X-Stream-Protocol-Version is empty"},
		{"no match", []string{"channel.k8s.io"}, "", 403, "unable to upgrade: unable to negotiate protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.values {
				h.Add(headerProtocolVersion, v)
			}
			got, rerr := negotiateProtocol(h)
			if tt.wantStatus == 0 {
				if rerr != nil || got != tt.want {
					t.Fatalf("negotiateProtocol(%q): got %q, %v; want %q", tt.values, got, rerr, tt.want)
				}
				return
			}
			if rerr == nil || rerr.status != tt.wantStatus || !strings.HasPrefix(rerr.msg, tt.wantMsg) {
				t.Fatalf("negotiateProtocol(%q): got %q, %+v; want %d %q", tt.values, got, rerr, tt.wantStatus, tt.wantMsg)
			}
			if strings.Contains(rerr.msg, "channel.k8s.io") {
				t.Fatalf("error %q echoes the request header", rerr.msg)
			}
		})
	}
	_, rerr := negotiateProtocol(http.Header{headerProtocolVersion: {"nope"}})
	if got := rerr.header.Values(headerAcceptedProtocolVersions); len(got) != 1 || got[0] != ProtocolPortForwardV1 {
		t.Fatalf("403 %s: got %q", headerAcceptedProtocolVersions, got)
	}
}

func TestCheckUpgradeHeaders(t *testing.T) {
	tests := []struct {
		name     string
		h        http.Header
		spdy, ws bool
	}{
		{"spdy", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"SPDY/3.1"}}, true, false},
		{"spdy lower case, connection list", http.Header{"Connection": {"keep-alive, upgrade"}, "Upgrade": {"spdy/3.1"}}, true, false},
		{"websocket", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, false, true},
		{"no connection header", http.Header{"Upgrade": {"SPDY/3.1"}}, false, false},
		{"plain request", http.Header{}, false, false},
		{"other upgrade", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c"}}, false, false},
	}
	for _, tt := range tests {
		if got := checkSPDYUpgrade(tt.h) == nil; got != tt.spdy {
			t.Errorf("%s: checkSPDYUpgrade ok = %v, want %v", tt.name, got, tt.spdy)
		}
		if got := isWebSocket(tt.h); got != tt.ws {
			t.Errorf("%s: isWebSocket = %v, want %v", tt.name, got, tt.ws)
		}
	}
}
