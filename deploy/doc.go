// Package deploy holds portforwardd's deployment files, not code: the
// systemd units (direct mode and beside CRI-O), the kubelet configuration
// change, the DaemonSet with its RBAC, the Prometheus scrape
// configuration, ServiceMonitor and alerts, the Grafana dashboard and the
// Containerfile (README.md says which is which).
//
// Its tests keep those files honest against the code they deploy. Every
// Kubernetes object is decoded strictly into the Kubernetes API types (a
// misspelt field fails), the Prometheus Operator objects and the scrape
// configuration into local mirrors of the fields used; the daemon is
// built with the Containerfile's go build, every flag the DaemonSet and
// the units pass must exist in it (read from `portforwardd -h`) and parse,
// each of the three recipes must start, answer the probes and stop on
// SIGTERM, and the DaemonSet's must run twice on the same ports, as its
// surge update runs it; every metric and label the alerts and
// the dashboard query must be registered by server.NewMetrics and
// cri.NewMetrics, and the security-relevant settings (host network, the
// netns mount's propagation, the one capability, seccomp, the RBAC rules)
// are asserted one by one.
package deploy
