package server

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/portforwardd/portforwardd/streams"
)

// headerValues turns fuzz input into the values of one header: one per
// line, none at all when absent.
func headerValues(values string, present bool) []string {
	if !present {
		return nil
	}
	return strings.Split(values, "\n")
}

// offeredTokens is the model of a comma-separated, repeatable header:
// every non-empty trimmed token, in order.
func offeredTokens(values []string) []string {
	var out []string
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// checkRefusal checks what every refusal promises: one line of text that
// echoes no request header. The protocol names the server itself lists
// are taken out of the message first, so a token that only overlaps them
// ("[portfor" in "accepts [portforward.k8s.io]") is not an echo.
func checkRefusal(t *testing.T, what string, rerr *requestError, values []string) {
	t.Helper()
	if strings.ContainsAny(rerr.msg, "\r\n") {
		t.Fatalf("%s: message %q is not one line", what, rerr.msg)
	}
	own := rerr.msg
	for _, p := range ourProtocols {
		own = strings.ReplaceAll(own, p, "\x00")
	}
	for _, v := range values {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); len(tok) >= 8 && strings.Contains(own, tok) && !isOurProtocol(tok) {
				t.Fatalf("%s: message %q echoes the request's %q", what, rerr.msg, tok)
			}
		}
	}
}

// ourProtocols are the protocol names the server itself names in its
// refusals.
var ourProtocols = []string{ProtocolTunnel, ProtocolV4Binary, ProtocolV4Base64, ProtocolPortForwardV1}

// isOurProtocol reports whether s is part of one of ourProtocols.
func isOurProtocol(s string) bool {
	for _, p := range ourProtocols {
		if strings.Contains(p, s) {
			return true
		}
	}
	return false
}

// FuzzNegotiateProtocol checks the SPDY subprotocol negotiation against a
// model (the first offered token the server supports; 400 without the
// header or without tokens; 403 naming the accepted versions otherwise)
// and against the kubelet's own code, apimachinery's httpstream.Handshake,
// wherever the two read the header alike (they trim different
// whitespace: Handshake only spaces).
func FuzzNegotiateProtocol(f *testing.F) {
	f.Add("portforward.k8s.io", true) // client-go
	f.Add("v2.portforward.k8s.io, portforward.k8s.io", true)
	f.Add("x\nportforward.k8s.io", true)
	f.Add(" , ", true)
	f.Add("", true)
	f.Add("", false)
	f.Add("channel.k8s.io", true)
	f.Add("portforward.k8s.io\t", true)
	f.Fuzz(func(t *testing.T, values string, present bool) {
		h := http.Header{}
		vs := headerValues(values, present)
		if present {
			h[http.CanonicalHeaderKey(headerProtocolVersion)] = vs
		}
		got, rerr := negotiateProtocol(h)
		offered := offeredTokens(vs)
		switch {
		case !present || len(offered) == 0:
			if rerr == nil || rerr.status != http.StatusBadRequest {
				t.Fatalf("negotiateProtocol(%q): %q, %+v; want 400", vs, got, rerr)
			}
		case slices.Contains(offered, ProtocolPortForwardV1):
			if rerr != nil || got != ProtocolPortForwardV1 {
				t.Fatalf("negotiateProtocol(%q): %q, %+v; want %q", vs, got, rerr, ProtocolPortForwardV1)
			}
		default:
			if rerr == nil || rerr.status != http.StatusForbidden ||
				!slices.Equal(rerr.header.Values(headerAcceptedProtocolVersions), supportedProtocols) {
				t.Fatalf("negotiateProtocol(%q): %q, %+v; want 403 naming %q", vs, got, rerr, supportedProtocols)
			}
		}
		if rerr != nil {
			checkRefusal(t, "negotiateProtocol", rerr, vs)
		}

		if strings.ContainsFunc(values, func(r rune) bool { return r != ' ' && r != '\n' && strings.TrimSpace(string(r)) == "" }) {
			return
		}
		rec := httptest.NewRecorder()
		kubelet, kerr := httpstream.Handshake(&http.Request{Header: h}, rec, supportedProtocols)
		status := 0
		if rerr != nil {
			status = rerr.status
		}
		if kerr == nil {
			rec.Code = 0
		}
		if got != kubelet || status != rec.Code {
			t.Fatalf("negotiateProtocol(%q): %q, status %d; the kubelet's Handshake: %q, status %d", vs, got, status, kubelet, rec.Code)
		}
	})
}

// FuzzNegotiateWebSocket checks the WebSocket subprotocol choice against
// its model: the tunnel whenever offered, else the first v4 protocol in
// the client's order, none offered means v4 binary with nothing echoed,
// and anything else is the kubelet's 403 (with the SPDY negotiation's
// X-Accepted-Stream-Protocol-Versions when a tunneling protocol was
// offered). What is echoed is always one of the
// client's tokens, as RFC 6455 §4.2.2 requires.
func FuzzNegotiateWebSocket(f *testing.F) {
	f.Add("SPDY/3.1+portforward.k8s.io, portforward.k8s.io", true) // kubectl >= 1.31
	f.Add("v4.channel.k8s.io", true)
	f.Add("v4.base64.channel.k8s.io, v4.channel.k8s.io", true)
	f.Add("base64.binary.k8s.io\nv4.base64.channel.k8s.io", true)
	f.Add("channel.k8s.io", true)
	f.Add("", false)
	f.Add(" ,, ", true)
	f.Fuzz(func(t *testing.T, values string, present bool) {
		h := http.Header{}
		vs := headerValues(values, present)
		for _, v := range vs {
			h.Add("Sec-WebSocket-Protocol", v)
		}
		got, rerr := negotiateWebSocket(h)
		offered := offeredTokens(vs)
		var want wsChoice
		wantOK := true
		switch {
		case slices.Contains(offered, ProtocolTunnel):
			want = wsChoice{subprotocol: ProtocolTunnel, tunnel: true}
		case len(offered) == 0:
		default:
			i := slices.IndexFunc(offered, func(p string) bool { return p == ProtocolV4Binary || p == ProtocolV4Base64 })
			if i < 0 {
				wantOK = false
				break
			}
			want = wsChoice{subprotocol: offered[i], base64: offered[i] == ProtocolV4Base64}
		}
		if !wantOK {
			if rerr == nil || rerr.status != http.StatusForbidden {
				t.Fatalf("negotiateWebSocket(%q): %+v, %+v; want 403", vs, got, rerr)
			}
			tunneling := slices.ContainsFunc(offered, func(p string) bool {
				return strings.HasPrefix(p, "SPDY/3.1+") && strings.HasSuffix(p, ".k8s.io")
			})
			if got := rerr.header.Get(headerAcceptedProtocolVersions); tunneling != (got == ProtocolPortForwardV1) {
				t.Fatalf("negotiateWebSocket(%q): %s %q, want it only for a tunneling protocol offered", vs, headerAcceptedProtocolVersions, got)
			}
			checkRefusal(t, "negotiateWebSocket", rerr, vs)
			return
		}
		if rerr != nil || got != want {
			t.Fatalf("negotiateWebSocket(%q): %+v, %+v; want %+v", vs, got, rerr, want)
		}
		if got.subprotocol != "" && !slices.Contains(offered, got.subprotocol) {
			t.Fatalf("negotiateWebSocket(%q) echoes %q, which the client did not offer", vs, got.subprotocol)
		}
	})
}

// hasLongValue reports whether a port value is long enough to be clipped
// in error texts.
func hasLongValue(values []string) bool {
	return slices.ContainsFunc(values, func(v string) bool { return len(v) > 64 })
}

// validPorts counts the ports of values the kubelet would read before its
// first error.
func validPorts(values []string) int {
	n := 0
	for _, v := range values {
		if v == "" {
			return n
		}
		for p := range strings.SplitSeq(v, ",") {
			if port, err := strconv.ParseUint(p, 10, 16); err != nil || port == 0 {
				return n
			}
			n++
		}
	}
	return n
}

// FuzzParsePortQuery checks the v4 port query against the kubelet's own
// parser (cri-streaming's NewV4Options): the same ports, or the same
// message (kept short: values over 64 bytes are clipped), except that more
// than MaxChannelPorts ports are refused (first, if the kubelet would find
// an error only after them); the ports it accepts are 1..65535 and
// re-render to a query that parses to them again.
func FuzzParsePortQuery(f *testing.F) {
	for _, q := range []string{
		"port=80", "port=80&port=90", "port=80,90,100", "port=8080%2C9090",
		"", "ports=80", "port=", "port=abc", "port=-1", "port=65536",
		"port=80,", "port=0", "port=+80", "port=0080", "port=%zz&port=80",
		"port=" + strings.Repeat("1,", 64) + "1",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		u := &url.URL{Path: "/portForward/default/web", RawQuery: rawQuery}
		got, rerr := parsePortQuery(u.Query())

		req := &http.Request{URL: u, Header: http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}}
		opts, kerr := portforward.NewV4Options(req)
		switch {
		case kerr != nil && validPorts(u.Query()["port"]) > streams.MaxChannelPorts:
			// Both refuse; the cap is reached before the kubelet's error.
			if rerr == nil || !strings.HasPrefix(rerr.msg, "too many ports") {
				t.Fatalf("parsePortQuery(%q): %v, %+v; want too many ports", rawQuery, got, rerr)
			}
		case kerr != nil:
			// The kubelet's text, but values over 64 bytes are clipped.
			kind, _, _ := strings.Cut(kerr.Error(), `"`)
			if rerr == nil || rerr.msg != kerr.Error() && (!hasLongValue(u.Query()["port"]) ||
				!strings.HasPrefix(rerr.msg, kind) || len(rerr.msg) > 1024) {
				t.Fatalf("parsePortQuery(%q): %v, %+v; the kubelet refuses it with %q", rawQuery, got, rerr, kerr)
			}
		case len(opts.Ports) > streams.MaxChannelPorts:
			if rerr == nil || !strings.HasPrefix(rerr.msg, "too many ports") {
				t.Fatalf("parsePortQuery(%q): %d ports, %+v; want too many ports", rawQuery, len(got), rerr)
			}
		default:
			if rerr != nil || len(got) != len(opts.Ports) {
				t.Fatalf("parsePortQuery(%q): %v, %+v; the kubelet reads %v", rawQuery, got, rerr, opts.Ports)
			}
			for i := range got {
				if int32(got[i]) != opts.Ports[i] {
					t.Fatalf("parsePortQuery(%q): %v; the kubelet reads %v", rawQuery, got, opts.Ports)
				}
			}
		}
		if rerr != nil {
			if rerr.status != http.StatusBadRequest || rerr.reason != "bad_port" {
				t.Fatalf("parsePortQuery(%q): refused with %d %s, want 400 bad_port", rawQuery, rerr.status, rerr.reason)
			}
			return
		}
		if len(got) == 0 || slices.Contains(got, 0) {
			t.Fatalf("parsePortQuery(%q) = %v", rawQuery, got)
		}
		var parts []string
		for _, p := range got {
			parts = append(parts, strconv.Itoa(int(p)))
		}
		again, rerr := parsePortQuery(url.Values{"port": {strings.Join(parts, ",")}})
		if rerr != nil || !slices.Equal(again, got) {
			t.Fatalf("parsePortQuery(%q) = %v, re-rendered: %v, %+v", rawQuery, got, again, rerr)
		}
	})
}
