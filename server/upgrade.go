package server

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
)

// Header names and values of the SPDY upgrade handshake (apimachinery
// httpstream and httpstream/spdy).
const (
	headerProtocolVersion          = "X-Stream-Protocol-Version"
	headerAcceptedProtocolVersions = "X-Accepted-Stream-Protocol-Versions"
	// ProtocolPortForwardV1 is the only port-forward subprotocol Kubernetes
	// has defined.
	ProtocolPortForwardV1 = "portforward.k8s.io"
	upgradeSPDY31         = "SPDY/3.1"
)

var supportedProtocols = []string{ProtocolPortForwardV1}

// requestError is an answer given before any upgrade: a status, a one-line
// message, and a reason for the upgrade-failure metric.
type requestError struct {
	status int
	reason string
	msg    string
	header http.Header // extra response headers
	err    error       // for the log only: the cause of a 500
}

// level is the level of a refusal's log line. What a client brings on
// itself (a wrong path, method or header, an unknown pod or token, no or
// bad credentials, a 503 it retries: the sessions limit, a drain) anyone
// who reaches the listener can repeat as fast as it likes, and
// upgrade_failures_total, auth_denials_total and limit_hits_total count
// it: debug, as the kubelet logs none of it at its default verbosity,
// also the 403 of a SPDY upgrade that offers no supported protocol. The
// 403 of authorization names a user with a valid credential who is not
// allowed (the kubelet's "Forbidden"), and a 502 a pod port that refused
// the dial (as the SPDY streams' "dial failed"): info. A 500 is the
// daemon's own failure (a namespace it cannot open, an auth webhook that
// fails): warn.
func (e *requestError) level() slog.Level {
	switch {
	case e.status == http.StatusForbidden && strings.HasPrefix(e.reason, "auth_"), e.status == http.StatusBadGateway:
		return slog.LevelInfo
	case e.status < 500, e.status == http.StatusServiceUnavailable:
		return slog.LevelDebug
	default:
		return slog.LevelWarn
	}
}

func (e *requestError) Error() string { return e.msg }

func headerContains(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		if strings.Contains(strings.ToLower(v), token) {
			return true
		}
	}
	return false
}

// isWebSocket reports whether r asks for a WebSocket upgrade, the way the
// kubelet's wsstream.IsWebSocketRequest decides.
func isWebSocket(h http.Header) bool {
	return headerContains(h, "Connection", "upgrade") && strings.EqualFold(strings.TrimSpace(h.Get("Upgrade")), "websocket")
}

// checkSPDYUpgrade checks the Connection and Upgrade headers the way
// apimachinery's UpgradeResponse does, without its habit of dumping every
// request header into the error.
func checkSPDYUpgrade(h http.Header) *requestError {
	if !headerContains(h, "Connection", "upgrade") || !headerContains(h, "Upgrade", strings.ToLower(upgradeSPDY31)) {
		return &requestError{status: http.StatusBadRequest, reason: "not_upgrade",
			msg: "unable to upgrade: missing upgrade headers in request: want Connection: Upgrade and Upgrade: SPDY/3.1"}
	}
	return nil
}

// negotiateProtocol picks the first protocol in the client's
// X-Stream-Protocol-Version headers (comma-separated, in the client's
// order) that the server supports, like apimachinery's Handshake.
func negotiateProtocol(h http.Header) (string, *requestError) {
	values, ok := h[http.CanonicalHeaderKey(headerProtocolVersion)]
	if !ok {
		return "", &requestError{status: http.StatusBadRequest, reason: "protocol",
			msg: fmt.Sprintf("unable to upgrade: header %s does not exist in request with %d headers", headerProtocolVersion, len(h))}
	}
	var offered []string
	for _, v := range values {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				offered = append(offered, p)
			}
		}
	}
	if len(offered) == 0 {
		return "", &requestError{status: http.StatusBadRequest, reason: "protocol",
			msg: fmt.Sprintf("unable to upgrade: header %s is empty", headerProtocolVersion)}
	}
	for _, p := range offered {
		for _, s := range supportedProtocols {
			if p == s {
				return p, nil
			}
		}
	}
	hdr := http.Header{}
	for _, s := range supportedProtocols {
		hdr.Add(headerAcceptedProtocolVersions, s)
	}
	return "", &requestError{status: http.StatusForbidden, reason: "protocol", header: hdr,
		msg: fmt.Sprintf("unable to upgrade: unable to negotiate protocol: server accepts %v", supportedProtocols)}
}
