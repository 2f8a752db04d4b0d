package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/portforwardd/portforwardd/nsenter"
)

// fuzzResolver knows every valid pod but "gone" (404) and "broken" (500).
type fuzzResolver struct{}

func (fuzzResolver) Resolve(_ context.Context, pod nsenter.Pod) (nsenter.Target, error) {
	switch pod.Name {
	case "gone":
		return nsenter.Target{}, nsenter.ErrPodNotFound
	case "broken":
		return nsenter.Target{}, errors.New("stat: permission denied")
	}
	return nsenter.Target{Path: "/nonexistent/netns/" + pod.Name}, nil
}

// refusingDialer fails every dial, so no request reaches a pod.
type refusingDialer struct{}

func (refusingDialer) Dial(context.Context, nsenter.Target, uint16) (*net.TCPConn, error) {
	return nil, errors.New("connect: connection refused")
}

// fuzzTokens grants one token, any number of times.
type fuzzTokens struct{}

func (fuzzTokens) Redeem(token string) (TokenGrant, bool) {
	if token != "AbCd_-12" {
		return TokenGrant{}, false
	}
	return TokenGrant{SandboxID: "0123abcd", Target: nsenter.Target{Path: "/nonexistent/netns/sandbox"}, Ports: []uint16{8080}}, true
}

// canary is a header value every fuzzed request carries; no answer may
// contain it.
const canary = "9d8e7f6a-canary-5b4c3d2e"

// FuzzServeHTTP sends arbitrary requests (parsed by net/http, as the
// listener would) to a Server whose pods cannot be dialed, through a
// ResponseRecorder that cannot be hijacked, so every request ends in an
// answer. Whatever the request:
//
//   - the answer is 101 only for a valid SPDY upgrade (with the upgrade
//     headers and the negotiated protocol), else 4xx or 5xx, never a
//     redirect or a success;
//   - a path that is no route is 404, a method other than GET or POST 405
//     (OPTIONS on a pod route: 204 naming the transports, or a refusal);
//   - a refusal is one line of text, closes an HTTP/1 connection, and
//     echoes no request header value (of 16 bytes or more).
func FuzzServeHTTP(f *testing.F) {
	s := New(Config{Resolver: fuzzResolver{}, Dialer: refusingDialer{}, Tokens: fuzzTokens{}})
	for _, req := range []string{
		// client-go SPDY (kubectl < 1.31, and every kubectl's fallback)
		"POST /portForward/default/web HTTP/1.1\r\nHost: node:10250\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n",
		// the WebSocket tunnel (kubectl >= 1.31)
		"GET /portForward/default/web HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io, portforward.k8s.io\r\n\r\n",
		// v4 channels, as the Kubernetes e2e test connects
		"GET /portForward/ns-1/pod-1/1234-abcd?port=80&port=8080 HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.base64.channel.k8s.io\r\n\r\n",
		"GET /portforward/AbCd_-12 HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
		"GET /portForward/default/web?port=5432 HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n",
		"GET /portForward/default/gone HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v5.portforward.k8s.io\r\n\r\n",
		"GET /portForward/Default/web_1 HTTP/1.1\r\n\r\n",
		"DELETE /portForward/default/broken HTTP/1.1\r\n\r\n",
		"OPTIONS /portForward/default/web HTTP/1.1\r\nHost: node\r\n\r\n",
		"OPTIONS /portforward/AbCd_-12 HTTP/1.1\r\n\r\n",
		"GET /portForward/a%2Fb/c HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
		"GET /exec/default/web HTTP/1.1\r\n\r\n",
		"GET //portForward/default/web HTTP/1.1\r\n\r\n",
	} {
		f.Add([]byte(req), false)
	}
	f.Add([]byte("POST /portForward/default/web?port=80 HTTP/1.1\r\n\r\n"), true)
	f.Fuzz(func(t *testing.T, raw []byte, h2 bool) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil || r.ProtoMajor != 1 {
			return // net/http answers it before any handler (505 for other versions)
		}
		if h2 {
			r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
		}
		r.RemoteAddr = "192.0.2.1:40000"
		r.Header.Set("X-Request-Canary", canary)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		res := w.Result()
		body := w.Body.String()

		path := r.URL.EscapedPath()
		_, isPod := parseRoute(path)
		_, isToken := parseTokenRoute(path)
		switch {
		case !isPod && !isToken:
			if res.StatusCode != http.StatusNotFound || body != "404 page not found\n" {
				t.Fatalf("%s %q: %d %q, want 404 page not found", r.Method, path, res.StatusCode, body)
			}
		case r.Method == http.MethodOptions && isPod:
			// The transports probe: 204 with the list, or a refusal
			// (bad pod reference, unknown pod).
			if res.StatusCode == http.StatusNoContent {
				if res.Header.Get(HeaderTransports) != offeredTransports || body != "" {
					t.Fatalf("OPTIONS %q: 204 with %v %q", path, res.Header, body)
				}
				return
			}
		case r.Method != http.MethodGet && r.Method != http.MethodPost:
			if res.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("%s %q: %d %q, want 405", r.Method, path, res.StatusCode, body)
			}
		}

		if res.StatusCode == http.StatusSwitchingProtocols {
			if r.ProtoMajor != 1 || isWebSocket(r.Header) || isConnectTCP(r.Header) || checkSPDYUpgrade(r.Header) != nil {
				t.Fatalf("101 for a request that is no SPDY upgrade:\n%s", raw)
			}
			if p, rerr := negotiateProtocol(r.Header); rerr != nil || res.Header.Get(headerProtocolVersion) != p ||
				res.Header.Get("Upgrade") != upgradeSPDY31 {
				t.Fatalf("101 with headers %v for:\n%s", res.Header, raw)
			}
			return
		}
		if res.StatusCode < 400 || res.StatusCode > 599 {
			t.Fatalf("%d %q for:\n%s", res.StatusCode, body, raw)
		}
		if !strings.HasSuffix(body, "\n") || strings.Count(body, "\n") != 1 || strings.Contains(body, "\r") {
			t.Fatalf("%d: body %q is not one line, for:\n%s", res.StatusCode, body, raw)
		}
		if r.ProtoMajor == 1 && res.Header.Get("Connection") != "close" {
			t.Fatalf("%d %q leaves the connection open, for:\n%s", res.StatusCode, body, raw)
		}
		// No refusal dumps the request's headers (apimachinery's
		// UpgradeResponse did), and a header value may reach the body only
		// where the path or the query also holds it (pod names and ports
		// are quoted back, as the kubelet does), as a protocol name the
		// server lists itself, or as the server's own words: those are
		// still there when the header is removed. Short values are
		// skipped: they are words of the server's own texts.
		if strings.Contains(body, canary) {
			t.Fatalf("%d %q dumps the request headers, for:\n%s", res.StatusCode, body, raw)
		}
		unescaped, _ := url.PathUnescape(path)
		query, _ := url.QueryUnescape(r.URL.RawQuery)
		for name, vs := range r.Header {
			for _, v := range vs {
				if v = strings.TrimSpace(v); len(v) < 16 || !strings.Contains(body, v) || isOurProtocol(v) ||
					strings.Contains(unescaped+"\x00"+query+"\x00"+path+"\x00"+r.URL.RawQuery, v) {
					continue
				}
				r2 := r.Clone(r.Context())
				r2.Header.Del(name)
				w2 := httptest.NewRecorder()
				s.ServeHTTP(w2, r2)
				if !strings.Contains(w2.Body.String(), v) {
					t.Fatalf("%d %q echoes header %s value %q, for:\n%s", res.StatusCode, body, name, v, raw)
				}
			}
		}
	})
}
