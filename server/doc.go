// Package server is portforwardd's HTTP front: it routes port-forward
// requests, resolves the pod to a network namespace, negotiates the
// transport, upgrades the connection, and hands it to a streams.Session
// whose dial enters the pod's namespace through nsenter. It also serves
// metrics and health, and drains sessions on shutdown.
//
// Routes on the forwarding listener (the kubelet's shapes):
//
//	GET|POST /portForward/{namespace}/{pod}
//	GET|POST /portForward/{namespace}/{pod}/{uid}
//
// Answers before an upgrade are plain one-line texts: 404 for an unknown
// route or pod, 400 for a request that is not a valid upgrade, 403 when no
// offered protocol is supported, 405 for other methods, 503 while shutting
// down. A failed upgrade is never answered with a redirect, and error
// bodies never echo request headers.
//
// Routes on the metrics listener: /metrics (Prometheus, private registry),
// /healthz (the process is up) and /readyz (it accepts new sessions).
package server
