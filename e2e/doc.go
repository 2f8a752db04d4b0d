// Package e2e tests the built portforwardd binary end to end: it creates
// network namespaces with `ip netns add`, runs pod servers inside them, and
// drives the daemon with the Kubernetes client code kubectl runs
// (client-go's tools/portforward over SPDY and the WebSocket tunnel), with
// v4 WebSocket, connect-tcp and HTTP/2 clients and the portforward CLI,
// and runs the CRI proxy in front of a real containerd that it starts.
//
// The tests need root, iproute2 and iptables (run inside a test pod's
// namespace only), and for the containerd test containerd, runc and the
// CNI plugins. Without them they skip, unless PORTFORWARDD_REQUIRE_ROOT=1
// (hack/test.sh's default, so .ci/run's too) turns the skip into a
// failure. PORTFORWARDD_E2E_RACE=1 builds the daemon with the race
// detector, and a race it reports fails the test that ran the daemon.
package e2e
