// Package cri puts portforwardd beside a CRI runtime (CRI-O, containerd).
//
// Proxy is a transparent gRPC proxy for the kubelet's CRI socket: every
// method of every service, known or not, unary or streaming, is forwarded
// to the upstream runtime byte for byte (a raw codec; metadata, deadlines,
// status codes, headers and trailers kept; messages up to MaxMessageSize
// both ways). Only /runtime.v1.RuntimeService/PortForward is decoded: the
// proxy checks the sandbox with the upstream's PodSandboxStatus(verbose),
// takes its network namespace from the verbose info, and answers with a
// single-use URL of portforwardd's own stream server,
// <base>/portforward/<token>. If that server is not ready, the call goes
// to the upstream unchanged.
//
// Tokens is the token cache behind those URLs (single use, 60 s, at most
// 1000 outstanding, like the kubelet streaming library's), and Resolver
// resolves {namespace}/{pod}[/{uid}] through CRI ListPodSandbox for the
// direct routes (a lookup is reused for ResolverCacheTTL, except a
// host-network sandbox's and one found by its process). Both bind the
// Target to the sandbox's namespace (nsenter.Identify), so that a session
// never dials into another one found at its path later. Dial reconnects
// to a runtime that restarted with the kubelet's CRI client backoff,
// 100 ms up to 3 s.
package cri
