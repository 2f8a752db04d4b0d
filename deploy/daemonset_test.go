package deploy

import (
	"cmp"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// only returns the single element of s, failing the test otherwise.
func only[T any](t *testing.T, what string, s []T) T {
	t.Helper()
	if len(s) != 1 {
		t.Fatalf("got %d %s, want exactly 1", len(s), what)
	}
	return s[0]
}

// daemonContainer returns the DaemonSet's portforwardd container.
func daemonContainer(t *testing.T, ds *appsv1.DaemonSet) *corev1.Container {
	t.Helper()
	for i := range ds.Spec.Template.Spec.Containers {
		if c := &ds.Spec.Template.Spec.Containers[i]; c.Name == containerName {
			return c
		}
	}
	t.Fatalf("DaemonSet %s has no container %q", ds.Name, containerName)
	return nil
}

// flagValue returns the value of --name in args (--name=v or --name v).
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		n, v, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || n != name {
			continue
		}
		if hasValue {
			return v, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
		return "", true
	}
	return "", false
}

func mustFlag(t *testing.T, args []string, name string) string {
	t.Helper()
	v, ok := flagValue(args, name)
	if !ok {
		t.Fatalf("args %q: no --%s", args, name)
	}
	return v
}

func listenPort(t *testing.T, addr string) (host string, port int32) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		t.Fatalf("listen address %q: port: %v", addr, err)
	}
	return h, int32(n)
}

// boolFlag reports whether args turn the boolean flag --name on: --name,
// or --name=v with a v that strconv.ParseBool reads as true (as the flag
// package does); the last one counts. A bool flag takes no separate value
// argument.
func boolFlag(args []string, name string) bool {
	on := false
	for _, a := range args {
		n, v, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || n != name {
			continue
		}
		on = !hasValue
		if hasValue {
			on, _ = strconv.ParseBool(v)
		}
	}
	return on
}

// hostPorts returns the host ports the pod's containers hold once the API
// server has defaulted the pod: with hostNetwork, every declared
// containerPort becomes a hostPort of the same number
// (k8s.io/kubernetes pkg/apis/core/v1/defaults.go, SetDefaults_Pod,
// defaultHostNetworkPorts), which the scheduler's NodePorts filter then
// will not give to a second pod on the node.
func hostPorts(pod *corev1.PodSpec) []string {
	var out []string
	for _, cs := range [][]corev1.Container{pod.InitContainers, pod.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				hp := p.HostPort
				if hp == 0 && pod.HostNetwork {
					hp = p.ContainerPort
				}
				if hp != 0 {
					out = append(out, fmt.Sprintf("%s %s/%d", c.Name, cmp.Or(p.Protocol, corev1.ProtocolTCP), hp))
				}
			}
		}
	}
	return out
}

func volume(pod *corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

// mountOf returns the volume mount path lies under.
func mountOf(c *corev1.Container, path string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if rel, err := filepath.Rel(m.MountPath, path); err == nil && !strings.HasPrefix(rel, "..") && rel != "." {
			return m
		}
	}
	return nil
}

// daemon is the DaemonSet under test and its portforwardd container.
type daemon struct {
	d    *deployment
	ds   *appsv1.DaemonSet
	pod  *corev1.PodSpec
	c    *corev1.Container
	args []string // command and args
}

func loadDaemon(t *testing.T) daemon {
	t.Helper()
	d := loadDeployment(t)
	ds := only(t, "DaemonSets", d.daemonSets)
	c := daemonContainer(t, ds)
	return daemon{d: d, ds: ds, pod: &ds.Spec.Template.Spec, c: c, args: append(slices.Clone(c.Command), c.Args...)}
}

// TestDaemonSetPod checks the pod-level settings: host network, no host
// PID namespace, and a namespace whose Pod Security level admits them.
func TestDaemonSetPod(t *testing.T) {
	x := loadDaemon(t)
	if x.ds.Namespace != appNamespace {
		t.Errorf("DaemonSet namespace: got %q, want %q", x.ds.Namespace, appNamespace)
	}
	sel, err := metav1.LabelSelectorAsSelector(x.ds.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(x.ds.Spec.Template.Labels)) {
		t.Errorf("DaemonSet selector %v does not select its pod template's labels %v (%v)", x.ds.Spec.Selector, x.ds.Spec.Template.Labels, err)
	}
	if !x.pod.HostNetwork {
		t.Error("hostNetwork: got false, want true (the listeners must be on the node's addresses)")
	}
	if x.pod.HostPID {
		t.Error("hostPID: got true, want false (pods are found through /run/netns, not /proc)")
	}
	if x.c.Image == "" {
		t.Error("the container has no image")
	}
	if only(t, "Namespaces", x.d.namespaces).Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Error("Namespace: pod-security.kubernetes.io/enforce must be privileged, or Pod Security admission refuses the DaemonSet's pods")
	}
}

// TestDaemonSetSecurityContext checks that the container holds root with
// CAP_SYS_ADMIN and nothing more.
func TestDaemonSetSecurityContext(t *testing.T) {
	x := loadDaemon(t)
	sc := x.c.SecurityContext
	if sc == nil {
		t.Fatal("the container has no securityContext")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("runAsUser: got %v, want 0 (setns needs CAP_SYS_ADMIN, granted to root)", sc.RunAsUser)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged: got true, want false or unset")
	}
	// Exactly SYS_ADMIN, spelled without CAP_: the API server refuses
	// "CAP_SYS_ADMIN" with allowPrivilegeEscalation: false.
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"SYS_ADMIN"}) {
		t.Errorf("capabilities: got %+v, want drop [ALL] add [SYS_ADMIN]", sc.Capabilities)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem: got false or unset, want true")
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile: got %+v, want RuntimeDefault", sc.SeccompProfile)
	}
}

// TestDaemonSetNetnsMount checks the netns directory: the host's,
// read-only, and receiving the pins made after the pod started.
func TestDaemonSetNetnsMount(t *testing.T) {
	x := loadDaemon(t)
	c, pod, args := x.c, x.pod, x.args
	dir := mustFlag(t, args, "netns-dir")
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == dir {
			mount = &c.VolumeMounts[i]
		}
	}
	switch {
	case mount == nil:
		t.Errorf("--netns-dir=%s is not a volume mount of the container", dir)
	case !mount.ReadOnly:
		t.Errorf("mount %s: readOnly false, want true", dir)
	case mount.MountPropagation == nil || *mount.MountPropagation != corev1.MountPropagationHostToContainer:
		got := "unset"
		if mount.MountPropagation != nil {
			got = string(*mount.MountPropagation)
		}
		t.Errorf("mount %s: mountPropagation %s, want HostToContainer (pins made later must appear)", dir, got)
	default:
		v := volume(pod, mount.Name)
		if v == nil || v.HostPath == nil || v.HostPath.Path != netnsDir {
			t.Errorf("mount %s: volume %q is not hostPath %s", dir, mount.Name, netnsDir)
		}
	}
}

// TestDaemonSetProbes checks the probes, on the metrics listener, which
// must then be reachable at the pod's (the node's) address.
func TestDaemonSetProbes(t *testing.T) {
	x := loadDaemon(t)
	c, args := x.c, x.args
	metricsHost, metricsPort := listenPort(t, mustFlag(t, args, "metrics-listen"))
	if metricsHost != "" && metricsHost != "0.0.0.0" && metricsHost != "::" {
		t.Errorf("--metrics-listen host %q: probes and Prometheus dial the node's address, so want a wildcard", metricsHost)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: got %+v, want an httpGet", p.name, p.probe)
			continue
		}
		// By number: a port name is looked up among the declared ports,
		// and the container declares none (TestDaemonSetSurge).
		g := p.probe.HTTPGet
		if g.Path != p.path || g.Port != intstr.FromInt32(metricsPort) || (g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP) {
			t.Errorf("%s: got %s %s on port %s, want HTTP %s on the metrics port by number, %d", p.name, g.Scheme, g.Path, g.Port.String(), p.path, metricsPort)
		}
	}
}

// TestDaemonSetSurge checks what lets an update refuse no client: each
// node's new pod starts beside the old one (maxSurge, maxUnavailable 0),
// it can be scheduled there (no host ports), it can listen there
// (--reuse-port; TestDaemonSetSurgeHandover runs it), and the old pod
// stays until the new one has been ready for minReadySeconds.
func TestDaemonSetSurge(t *testing.T) {
	x := loadDaemon(t)
	us := x.ds.Spec.UpdateStrategy
	if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil {
		t.Fatalf("updateStrategy %+v: want RollingUpdate with rollingUpdate set", us)
	}
	ru := us.RollingUpdate
	// maxSurge rounds up: any positive value surges on every node it is
	// given. maxUnavailable defaults to 1 when unset, and the API server
	// refuses both non-zero, so it must be given, as 0.
	surge, err := intstr.GetScaledValueFromIntOrPercent(ru.MaxSurge, 1, true)
	if ru.MaxSurge == nil || err != nil || surge < 1 {
		t.Errorf("rollingUpdate.maxSurge %v (%v): want at least 1, so the new pod starts beside the old one", ru.MaxSurge, err)
	}
	unavailable, err := intstr.GetScaledValueFromIntOrPercent(ru.MaxUnavailable, 100, true)
	if ru.MaxUnavailable == nil || err != nil || unavailable != 0 {
		t.Errorf("rollingUpdate.maxUnavailable %v (%v): want 0, given (it defaults to 1)", ru.MaxUnavailable, err)
	}
	if hp := hostPorts(x.pod); len(hp) > 0 {
		t.Errorf("host ports %v: the scheduler (NodePorts) keeps the surge pod Pending on a node whose old pod holds them; with hostNetwork every declared container port is one, so declare none", hp)
	}
	if !boolFlag(x.args, "reuse-port") {
		t.Errorf("args %q: --reuse-port is not on, so the surge pod cannot listen beside the old one (address already in use)", x.args)
	}
	// Either daemon may answer the readiness probe during the surge, so
	// the new pod must stay ready a while, a probe period at least,
	// before the old one is deleted; a container that exits is unready.
	rp := x.c.ReadinessProbe
	if rp == nil {
		t.Fatal("no readinessProbe: the surge would delete the old pod as soon as the new one runs")
	}
	period := cmp.Or(rp.PeriodSeconds, 10) // the API's default
	if x.ds.Spec.MinReadySeconds < period {
		t.Errorf("minReadySeconds %d: want at least the readiness probe's period, %d s, since the old daemon may answer the new pod's probe", x.ds.Spec.MinReadySeconds, period)
	}
}

// envRef is a $(VAR) reference in a container's command or args.
var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// TestDaemonSetArgs checks what the arguments refer to: environment
// variables (an undefined $(VAR) is passed on verbatim by the kubelet) and
// the TLS files of the Secret.
func TestDaemonSetArgs(t *testing.T) {
	x := loadDaemon(t)
	c, pod, args := x.c, x.pod, x.args
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	for _, a := range args {
		for _, m := range envRef.FindAllStringSubmatch(a, -1) {
			if _, ok := env[m[1]]; !ok {
				t.Errorf("argument %q refers to $(%s), which the container's env does not define", a, m[1])
			}
		}
	}
	if e, ok := env["NODE_NAME"]; !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("env NODE_NAME: got %+v, want a fieldRef to spec.nodeName", e)
	}
	if v, _ := flagValue(args, "node-name"); v != "$(NODE_NAME)" {
		t.Errorf("--node-name: got %q, want $(NODE_NAME)", v)
	}

	// The TLS files come from the Secret, under the keys README.md names.
	tlsKeys := map[string]string{"tls-cert-file": "tls.crt", "tls-private-key-file": "tls.key", "client-ca-file": "ca.crt"}
	modeReported := false
	for flag, key := range tlsKeys {
		path := mustFlag(t, args, flag)
		m := mountOf(c, path)
		if m == nil {
			t.Errorf("--%s=%s is under no volume mount", flag, path)
			continue
		}
		v := volume(pod, m.Name)
		if v == nil || v.Secret == nil || v.Secret.SecretName != tlsSecret {
			t.Errorf("--%s=%s: volume %q is not Secret %s", flag, path, m.Name, tlsSecret)
			continue
		}
		if mode := v.Secret.DefaultMode; (mode == nil || *mode&0o077 != 0) && !modeReported {
			modeReported = true
			got := "unset (0644)"
			if mode != nil {
				got = fmt.Sprintf("%#o", *mode)
			}
			t.Errorf("Secret volume %s: defaultMode %s, want no group or other bits (it holds the private key)", m.Name, got)
		}
		if m.SubPath != "" {
			t.Errorf("--%s: mount %s uses subPath, so a renewed Secret would never reach the file", flag, m.MountPath)
		}
		if rel := strings.TrimPrefix(strings.TrimPrefix(path, m.MountPath), "/"); rel != key || len(v.Secret.Items) > 0 {
			t.Errorf("--%s=%s: got file %q of the Secret (items %v), want key %s", flag, path, rel, v.Secret.Items, key)
		}
	}
}

// TestDaemonSetMemory checks that the buffer budget and the process fit
// in the memory limit.
func TestDaemonSetMemory(t *testing.T) {
	x := loadDaemon(t)
	c, args := x.c, x.args
	budgetQ, err := resource.ParseQuantity(mustFlag(t, args, "buffer-bytes"))
	if err != nil {
		t.Fatalf("--buffer-bytes: %v", err)
	}
	budget := budgetQ.Value()
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok || limit.Value() < budget+processHeadroom {
		t.Errorf("memory limit %s: want at least --buffer-bytes (%d) + %d MiB for the process, or the daemon is OOM-killed before its own budget stops it",
			limit.String(), budget, processHeadroom>>20)
	}
	if req, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok || (limit.Value() > 0 && req.Cmp(limit) > 0) {
		t.Errorf("memory request %s: want one, no larger than the limit %s", req.String(), limit.String())
	}
}

// TestMetricsService checks the headless Service the ServiceMonitor
// scrapes through.
func TestMetricsService(t *testing.T) {
	x := loadDaemon(t)
	ds := x.ds
	_, metricsPort := listenPort(t, mustFlag(t, x.args, "metrics-listen"))
	svc := only(t, "Services", x.d.services)
	if svc.Name != metricsService || svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s, clusterIP %q: want headless %s", svc.Name, svc.Spec.ClusterIP, metricsService)
	}
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("Service selector %v does not select the DaemonSet's pods %v", svc.Spec.Selector, ds.Spec.Template.Labels)
	}
	for _, p := range svc.Spec.Ports {
		if p.Name != "metrics" {
			continue
		}
		// By number: a named targetPort is looked up among the pod's
		// declared ports, of which there are none, and the endpoints
		// would leave every pod out.
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port)
		}
		if target != intstr.FromInt32(metricsPort) || p.Port != metricsPort {
			t.Errorf("Service port metrics: port %d targetPort %s, want %d and --metrics-listen's port by number", p.Port, p.TargetPort.String(), metricsPort)
		}
		return
	}
	t.Errorf("Service %s has no port named metrics", svc.Name)
}

// TestDaemonSetCRIMounts checks what the CRI resolver (--cri-endpoint)
// needs inside the pod: the runtime's socket at the path it is given, from
// the host's directory of that socket, and the namespace files at the
// paths the runtime reports (/var/run/netns/..., CRI-O's and containerd's
// pins), from the host's netns directory and receiving later pins.
func TestDaemonSetCRIMounts(t *testing.T) {
	x := loadDaemon(t)
	endpoint, ok := flagValue(x.args, "cri-endpoint")
	if !ok {
		t.Skip("the DaemonSet does not resolve pods through the CRI")
	}
	sock, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok {
		t.Fatalf("--cri-endpoint %q: want unix:///path", endpoint)
	}
	m := mountOf(x.c, sock)
	if m == nil {
		t.Fatalf("--cri-endpoint socket %s is under no volume mount", sock)
	}
	v := volume(x.pod, m.Name)
	if v == nil || v.HostPath == nil {
		t.Fatalf("--cri-endpoint socket %s: volume %q is not a hostPath", sock, m.Name)
	}
	if host := filepath.Join(v.HostPath.Path, strings.TrimPrefix(sock, m.MountPath)); host != sock {
		t.Errorf("--cri-endpoint socket %s is the host's %s, want the same path on the host", sock, host)
	}
	if m.SubPath != "" {
		t.Errorf("mount %s uses subPath: a socket the runtime re-creates on restart would not be seen", m.MountPath)
	}
	for _, dir := range []string{"/var/run/netns", netnsDir} {
		pin := dir + "/3f1b3c55-64b2-4b9a-9c1e-6f0f2f6d8b11"
		m := mountOf(x.c, pin)
		switch {
		case m == nil:
			t.Errorf("a namespace pinned at %s (as the runtime reports it) is under no volume mount", pin)
		case m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer:
			t.Errorf("mount %s: want mountPropagation HostToContainer, or pins made after the pod started are empty files", m.MountPath)
		default:
			if v := volume(x.pod, m.Name); v == nil || v.HostPath == nil || v.HostPath.Path != netnsDir || m.MountPath != dir {
				t.Errorf("mount %s: want the host's %s at %s", m.MountPath, netnsDir, dir)
			}
		}
	}
}
