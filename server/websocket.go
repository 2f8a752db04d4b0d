package server

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/gorilla/websocket"

	"github.com/portforwardd/portforwardd/nsenter"
	"github.com/portforwardd/portforwardd/streams"
)

// WebSocket subprotocols for port-forward.
const (
	// ProtocolV4Binary and ProtocolV4Base64 are the kubelet's channel
	// protocols; a request that offers no subprotocol gets binary too.
	ProtocolV4Binary = "v4.channel.k8s.io"
	ProtocolV4Base64 = "v4.base64.channel.k8s.io"
	// ProtocolTunnel is SPDY tunnelled through WebSocket binary messages
	// (client-go's tunneling dialer, kubectl ≥ 1.31).
	ProtocolTunnel = tunnelPrefix + ProtocolPortForwardV1
	// tunnelPrefix marks the tunneling subprotocols (apimachinery's
	// WebsocketsSPDYTunnelingPrefix).
	tunnelPrefix = "SPDY/3.1+"
)

// wsChoice is the outcome of WebSocket subprotocol negotiation.
type wsChoice struct {
	subprotocol string // echoed in Sec-WebSocket-Protocol; "" for none
	tunnel      bool
	base64      bool
}

// websocketProtocols returns the subprotocols the client offered, in its
// order.
func websocketProtocols(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Sec-Websocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// negotiateWebSocket picks the transport of a WebSocket request. The
// tunnel wins whenever it is offered, as in the kubelet and API server
// (they route any request offering a tunneling protocol to the tunnel);
// otherwise the first v4 protocol in the client's order, and no
// subprotocol at all means v4 binary.
func negotiateWebSocket(h http.Header) (wsChoice, *requestError) {
	offered := websocketProtocols(h)
	for _, p := range offered {
		if p == ProtocolTunnel {
			return wsChoice{subprotocol: p, tunnel: true}, nil
		}
	}
	if len(offered) == 0 {
		return wsChoice{}, nil
	}
	for _, p := range offered {
		switch p {
		case ProtocolV4Binary:
			return wsChoice{subprotocol: p}, nil
		case ProtocolV4Base64:
			return wsChoice{subprotocol: p, base64: true}, nil
		}
	}
	// 403, as from the kubelet: x/net/websocket's handshake (wsstream)
	// answers a refused v4 subprotocol so, and a tunnel offering other
	// SPDY/3.1+*.k8s.io protocols gets the SPDY negotiation's 403, which
	// the kubelet's tunneling handler replays, with its header.
	rerr := &requestError{status: http.StatusForbidden, reason: "protocol",
		msg: fmt.Sprintf("unable to upgrade: requested WebSocket subprotocols are not supported; supports %q, %q, %q or none",
			ProtocolTunnel, ProtocolV4Binary, ProtocolV4Base64)}
	for _, p := range offered {
		if strings.HasPrefix(p, tunnelPrefix) && strings.HasSuffix(p, ".k8s.io") {
			rerr.header = http.Header{headerAcceptedProtocolVersions: supportedProtocols}
			break
		}
	}
	return wsChoice{}, rerr
}

// parsePortQuery reads the v4 protocol's ports from the query parameter
// "port", which may repeat and hold comma-separated lists, with the
// kubelet's messages (NewV4Options).
func parsePortQuery(q url.Values) ([]uint16, *requestError) {
	bad := func(format string, args ...any) *requestError {
		return &requestError{status: http.StatusBadRequest, reason: "bad_port", msg: fmt.Sprintf(format, args...)}
	}
	values := q["port"]
	if len(values) == 0 {
		return nil, bad(`query parameter "port" is required`)
	}
	var ports []uint16
	for _, v := range values {
		if v == "" {
			return nil, bad(`query parameter "port" cannot be empty`)
		}
		for p := range strings.SplitSeq(v, ",") {
			port, err := strconv.ParseUint(p, 10, 16)
			if err != nil {
				// The kubelet's text, with the value clipped wherever it
				// appears, so that the answer stays short.
				if ne, ok := err.(*strconv.NumError); ok {
					ne.Num = clip(ne.Num)
				}
				return nil, bad("unable to parse %q as a port: %v", clip(v), err)
			}
			if port < 1 {
				return nil, bad("port %q must be > 0", clip(v))
			}
			if len(ports) == streams.MaxChannelPorts {
				return nil, bad("too many ports: at most %d per connection", streams.MaxChannelPorts)
			}
			ports = append(ports, uint16(port))
		}
	}
	return ports, nil
}

// wsBufferPool shares write buffers between idle WebSockets.
var wsBufferPool sync.Pool

// serveWebSocket upgrades r and runs the chosen WebSocket transport. A
// failed handshake is answered with a non-101 status, so client-go's
// fallback dialer retries over SPDY.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request, pod nsenter.Pod, target nsenter.Target, choice wsChoice, ports []uint16) {
	up := websocket.Upgrader{
		ReadBufferSize:  64 << 10,
		WriteBufferSize: 64 << 10,
		WriteBufferPool: &wsBufferPool,
		// Like the kubelet: callers are authenticated, not browsers.
		CheckOrigin: func(*http.Request) bool { return true },
		// The 101 is written with a deadline (see answerTimeout).
		HandshakeTimeout: s.answerTimeout(),
		// The version the handshake speaks goes with the refusal, as
		// RFC 6455 asks of a version mismatch, the Upgrader's own answer
		// and the kubelet's x/net/websocket give it.
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			s.fail(w, r, &requestError{status: status, reason: "websocket_handshake", msg: "unable to upgrade: " + reason.Error(),
				header: http.Header{"Sec-Websocket-Version": {"13"}}})
		},
	}
	var hdr http.Header
	if choice.subprotocol != "" {
		hdr = http.Header{"Sec-Websocket-Protocol": {choice.subprotocol}}
	}
	ws, err := up.Upgrade(w, r, hdr)
	if err != nil {
		return // answered by up.Error
	}
	if choice.tunnel {
		s.runSPDY(streams.WebSocketNetConn(ws), nil, protocolTunnel, pod, target, s.requestLog(r, pod, protocolTunnel))
		return
	}
	protocol := protocolV4Binary
	if choice.base64 {
		protocol = protocolV4Base64
	}
	log := s.sessionLog(r, pod, protocol, 0)
	cfg := streams.ChannelConfig{
		Ports:       ports,
		Base64:      choice.base64,
		Pod:         pod.String(),
		UID:         pod.UID,
		Dial:        s.dialFunc(target),
		IdleTimeout: s.cfg.StreamIdleTimeout,
		Global:      s.budget,
		OnLimit:     s.limitHit,
		Observer:    s.m.observer(protocol),
		Log:         log,
	}
	// A v4 WebSocket's ports are all dialed at once, so a drain has
	// nothing to refuse: it waits for them to end.
	s.runSession(func() {}, protocol, log, func(ctx context.Context) { streams.ServeChannels(ctx, ws, cfg) })
}

// clipLen bounds how much of a client's value an error repeats.
const clipLen = 64

// clip shortens s for an error text.
func clip(s string) string {
	if len(s) <= clipLen {
		return s
	}
	return s[:clipLen] + "..."
}
