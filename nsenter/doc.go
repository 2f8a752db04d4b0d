// Package nsenter maps pods to network namespaces and opens TCP connections
// inside them.
//
// A Resolver turns a pod reference into a Target: the path of a file that is
// a network namespace (an nsfs bind mount such as /run/netns/<name>), and
// the identity of the namespace it held then (see below).
// DirResolver is the netns-directory resolver: pod {namespace}/{name} is the
// file <dir>/<namespace>_<name>, which is what `ip netns add` creates.
//
// Dial creates a socket inside a Target and connects it to the pod's own
// loopback: 127.0.0.1:<port>, then [::1]:<port>, serially, with IP literals
// only (no resolver, no Happy Eyeballs), each attempt bounded by a timeout.
//
// Thread-locality rule: setns(2) moves only the calling OS thread. Dial runs
// the namespaced part on a fresh goroutine that locks its OS thread, enters
// the namespace, creates the socket, and switches back before connecting it
// (the dialer's Control hook), so no thread waits out a handshake inside a
// pod's namespace. It starts no goroutine while inside. If switching back fails the goroutine
// exits still locked, so the Go runtime terminates that thread instead of
// reusing it in the wrong namespace. A socket keeps the namespace it was
// created in, so the returned connection may be used from any goroutine.
//
// A Target is bound to the namespace its path named when it was resolved
// (Identify): Dial refuses another namespace found at the path later, a
// pod deleted and created again under its name or a PID taken by another
// process, as a namespace that is gone (ErrNetnsGone). It tells them apart
// by the kernel's namespace ID (NS_GET_ID, Linux 6.18) where there is one,
// else by inode number, which the kernel reuses once a namespace is freed.
//
// The package never executes a program (no nsenter(1), no socat) and knows
// nothing about HTTP or Kubernetes protocols. It does not verify pod UIDs: a
// netns directory has no record of them.
package nsenter
