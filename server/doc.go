// Package server is portforwardd's HTTP front: it routes port-forward
// requests, resolves the pod to a network namespace, negotiates the
// transport, upgrades the connection, and hands it to a streams.Session
// whose dial enters the pod's namespace through nsenter. It also serves
// metrics and health, and drains sessions on shutdown.
//
// Routes on the forwarding listener (the kubelet's shapes):
//
//	GET|POST|OPTIONS /portForward/{namespace}/{pod}
//	GET|POST|OPTIONS /portForward/{namespace}/{pod}/{uid}
//	GET|POST /portforward/{token}   (the CRI proxy's single-use URLs)
//
// OPTIONS upgrades nothing: it answers which transports the server offers
// (HeaderTransports). Answers before an upgrade are plain one-line texts:
// 404 for an unknown route, pod or token, 400 for a request that is not a
// valid upgrade, 401 and 403 from Config.Auth (and its 499 to a client
// that left while it was checked), 403 when no offered protocol is
// supported, 405 for other methods, 502 when the pod of a connect-tcp or
// HTTP/2 request cannot be dialed, 500 when the pod's namespace cannot be
// found or the API server cannot be asked, 503 at Limits.MaxSessions or
// while shutting down (to all but a connect-tcp, an HTTP/2 stream, a v4
// WebSocket or an OPTIONS, which can only come on a connection accepted
// before the listener closed, and are served: see Server.Drain and
// Server.AwaitAccepted). A failed upgrade is never answered with a
// redirect, and error bodies never echo request headers.
//
// Routes on the metrics listener: /metrics (Prometheus, private registry),
// /healthz (the process is up), /readyz (it accepts new sessions), and
// /debug/pprof/ with Config.Pprof.
package server
