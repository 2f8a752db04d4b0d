package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// jobName is the job label of every scrape of the daemon, whichever way it
// is scraped; the alerts and the dashboard select on it.
const jobName = "portforwardd"

// scrapeConfigFile mirrors the parts of prometheus.yml that prometheus.yaml
// uses.
type scrapeConfigFile struct {
	ScrapeConfigs []struct {
		JobName             string `json:"job_name"`
		ScrapeInterval      string `json:"scrape_interval"`
		ScrapeTimeout       string `json:"scrape_timeout"`
		MetricsPath         string `json:"metrics_path"`
		Scheme              string `json:"scheme"`
		KubernetesSDConfigs []struct {
			Role       string `json:"role"`
			Namespaces struct {
				Names []string `json:"names"`
			} `json:"namespaces"`
		} `json:"kubernetes_sd_configs"`
		RelabelConfigs []relabelConfig `json:"relabel_configs"`
	} `json:"scrape_configs"`
}

// relabelConfig is one step of Prometheus's relabeling; nil fields take
// Prometheus's defaults.
type relabelConfig struct {
	SourceLabels []string `json:"source_labels"`
	Separator    *string  `json:"separator"`
	Regex        *string  `json:"regex"`
	TargetLabel  string   `json:"target_label"`
	Replacement  *string  `json:"replacement"`
	Action       string   `json:"action"`
}

// operatorRelabel is the Prometheus Operator's spelling of relabelConfig.
type operatorRelabel struct {
	SourceLabels []string `json:"sourceLabels"`
	Separator    *string  `json:"separator"`
	Regex        *string  `json:"regex"`
	TargetLabel  string   `json:"targetLabel"`
	Replacement  *string  `json:"replacement"`
	Action       string   `json:"action"`
}

// relabel applies rules to a target's labels as Prometheus does: keep and
// drop end the target, replace sets or (when empty) removes a label, and
// the "__" labels are gone afterwards, __address__ having become instance
// unless it was set. kept is false for a dropped target.
func relabel(target map[string]string, rules []relabelConfig) (out map[string]string, addr string, kept bool, err error) {
	l := maps.Clone(target)
	for _, r := range rules {
		sep, re, repl := ";", "(.*)", "$1"
		if r.Separator != nil {
			sep = *r.Separator
		}
		if r.Regex != nil {
			re = *r.Regex
		}
		if r.Replacement != nil {
			repl = *r.Replacement
		}
		rx, err := regexp.Compile("^(?:" + re + ")$")
		if err != nil {
			return nil, "", false, fmt.Errorf("regex %q: %w", re, err)
		}
		vals := make([]string, len(r.SourceLabels))
		for i, s := range r.SourceLabels {
			vals[i] = l[s]
		}
		val := strings.Join(vals, sep)
		switch strings.ToLower(r.Action) {
		case "keep":
			if !rx.MatchString(val) {
				return nil, "", false, nil
			}
		case "drop":
			if rx.MatchString(val) {
				return nil, "", false, nil
			}
		case "", "replace":
			if r.TargetLabel == "" {
				return nil, "", false, fmt.Errorf("replace of %v without a target label", r.SourceLabels)
			}
			idx := rx.FindStringSubmatchIndex(val)
			if idx == nil {
				continue
			}
			if res := string(rx.ExpandString(nil, repl, val, idx)); res == "" {
				delete(l, r.TargetLabel)
			} else {
				l[r.TargetLabel] = res
			}
		default:
			return nil, "", false, fmt.Errorf("action %q: this test knows keep, drop and replace", r.Action)
		}
	}
	addr = l["__address__"]
	if _, ok := l["instance"]; !ok {
		l["instance"] = addr
	}
	for k := range l {
		if strings.HasPrefix(k, "__") {
			delete(l, k)
		}
	}
	return l, addr, true, nil
}

var notLabelChar = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// discoveredPod is a pod as Prometheus's pod discovery sees it.
type discoveredPod struct {
	name, ip, node string
}

// podTargets are the targets Prometheus's pod discovery (role pod) makes
// of a pod: one per declared port of each container, and for a container
// that declares none one port-free target, whose __address__ is the pod
// IP alone, for relabeling to add a port (Prometheus's configuration
// docs, kubernetes_sd_config; discovery/kubernetes/pod.go, buildPod).
// Init containers are targets too. For an IPv6 pod IP the port-free
// __address__ is bare, or bracketed since prometheus/prometheus#16705
// (bracketV6).
func podTargets(job, namespace string, pod discoveredPod, podLabels map[string]string, spec *corev1.PodSpec, bracketV6 bool) []map[string]string {
	var out []map[string]string
	containers := append(slices.Clone(spec.Containers), spec.InitContainers...)
	for i, c := range containers {
		base := map[string]string{
			"job":                                  job,
			"__meta_kubernetes_namespace":          namespace,
			"__meta_kubernetes_pod_name":           pod.name,
			"__meta_kubernetes_pod_node_name":      pod.node,
			"__meta_kubernetes_pod_ip":             pod.ip,
			"__meta_kubernetes_pod_container_name": c.Name,
			"__meta_kubernetes_pod_container_init": strconv.FormatBool(i >= len(spec.Containers)),
		}
		for k, v := range podLabels {
			k = notLabelChar.ReplaceAllString(k, "_")
			base["__meta_kubernetes_pod_label_"+k] = v
			base["__meta_kubernetes_pod_labelpresent_"+k] = "true"
		}
		if len(c.Ports) == 0 {
			l := maps.Clone(base)
			l["__address__"] = pod.ip
			if bracketV6 && strings.Contains(pod.ip, ":") {
				l["__address__"] = "[" + pod.ip + "]"
			}
			out = append(out, l)
			continue
		}
		for _, p := range c.Ports {
			l := maps.Clone(base)
			l["__address__"] = net.JoinHostPort(pod.ip, strconv.Itoa(int(p.ContainerPort)))
			l["__meta_kubernetes_pod_container_port_name"] = p.Name
			l["__meta_kubernetes_pod_container_port_number"] = strconv.Itoa(int(p.ContainerPort))
			l["__meta_kubernetes_pod_container_port_protocol"] = string(p.Protocol)
			out = append(out, l)
		}
	}
	return out
}

// TestScrapeConfig runs prometheus.yaml's relabeling over the targets
// Prometheus's pod discovery makes of the DaemonSet's pods (IPv4 and
// IPv6, a node in the middle of an update with two of them, a container
// added beside the daemon) and of a stranger's pod beside them: each pod
// of the DaemonSet must give exactly one target, <pod IP>:<the
// --metrics-listen port>, with job, instance, node, namespace and pod.
func TestScrapeConfig(t *testing.T) {
	x := loadDaemon(t)
	ds := x.ds
	_, metricsPort := listenPort(t, mustFlag(t, x.args, "metrics-listen"))
	sc := only(t, "scrape jobs in prometheus.yaml", only(t, "scrape configuration files", x.d.scrapeConfigs).ScrapeConfigs)

	if sc.JobName != jobName {
		t.Errorf("job_name %q, want %q (the alerts and the dashboard select it)", sc.JobName, jobName)
	}
	sd := only(t, "kubernetes_sd_configs", sc.KubernetesSDConfigs)
	if sd.Role != "pod" || !slices.Equal(sd.Namespaces.Names, []string{ds.Namespace}) {
		t.Errorf("kubernetes_sd_configs: role %q in %v, want role pod in [%s]", sd.Role, sd.Namespaces.Names, ds.Namespace)
	}
	if (sc.MetricsPath != "" && sc.MetricsPath != "/metrics") || (sc.Scheme != "" && sc.Scheme != "http") {
		t.Errorf("scrapes %s://…%s, want http and /metrics", sc.Scheme, sc.MetricsPath)
	}

	// A container someone adds to the pod (a sidecar, a debugger) makes
	// a target of its own, which must not be scraped as the daemon.
	withSidecar := ds.Spec.Template.Spec.DeepCopy()
	withSidecar.Containers = append(withSidecar.Containers, corev1.Container{Name: "sidecar"})

	old := discoveredPod{ds.Name + "-x7k2p", "192.0.2.10", "node-a"}
	surge := discoveredPod{ds.Name + "-q4m9z", "192.0.2.10", "node-a"}
	v6 := discoveredPod{ds.Name + "-h2v8c", "2001:db8::10", "node-b"}
	for _, tc := range []struct {
		name      string
		pods      []discoveredPod
		spec      *corev1.PodSpec
		bracketV6 bool
	}{
		{"IPv4", []discoveredPod{old}, &ds.Spec.Template.Spec, false},
		{"IPv6, bare port-free address", []discoveredPod{v6}, &ds.Spec.Template.Spec, false},
		{"IPv6, bracketed port-free address", []discoveredPod{v6}, &ds.Spec.Template.Spec, true},
		{"surge: the old pod and its replacement on one node", []discoveredPod{old, surge}, &ds.Spec.Template.Spec, false},
		{"a container beside the daemon", []discoveredPod{old}, withSidecar, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kept := map[string][]string{} // pod: addresses
			for _, pod := range tc.pods {
				want := map[string]string{
					"job":       jobName,
					"instance":  net.JoinHostPort(pod.ip, strconv.Itoa(int(metricsPort))),
					"node":      pod.node,
					"namespace": ds.Namespace,
					"pod":       pod.name,
				}
				for _, target := range podTargets(sc.JobName, ds.Namespace, pod, ds.Spec.Template.Labels, tc.spec, tc.bracketV6) {
					l, addr, ok, err := relabel(target, sc.RelabelConfigs)
					if err != nil {
						t.Fatal(err)
					}
					if !ok {
						continue
					}
					kept[pod.name] = append(kept[pod.name], addr)
					if addr != want["instance"] {
						t.Errorf("pod %s (IP %s), container %s: scrapes %q, want %s (the --metrics-listen port)",
							pod.name, pod.ip, target["__meta_kubernetes_pod_container_name"], addr, want["instance"])
					}
					if !maps.Equal(l, want) {
						t.Errorf("pod %s, container %s: target labels %v, want %v", pod.name, target["__meta_kubernetes_pod_container_name"], l, want)
					}
				}
				if len(kept[pod.name]) != 1 {
					t.Errorf("pod %s gives targets %v, want exactly one", pod.name, kept[pod.name])
				}
			}
		})
	}

	stranger := map[string]string{"app.kubernetes.io/name": "something-else"}
	for _, target := range podTargets(sc.JobName, ds.Namespace, discoveredPod{"other", "192.0.2.20", "node-a"}, stranger, &ds.Spec.Template.Spec, false) {
		if _, addr, ok, err := relabel(target, sc.RelabelConfigs); err != nil || ok {
			t.Errorf("another pod in the namespace is scraped (%s, %v)", addr, err)
		}
	}
}

func TestServiceMonitor(t *testing.T) {
	d := loadDeployment(t)
	sm := only(t, "ServiceMonitors", d.serviceMonitors)
	svc := only(t, "Services", d.services)

	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %+v does not select Service %s (labels %v): %v", sm.Spec.Selector, svc.Name, svc.Labels, err)
	}
	if !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
		t.Errorf("namespaceSelector.matchNames %v does not include the Service's namespace %s", sm.Spec.NamespaceSelector.MatchNames, svc.Namespace)
	}
	if got := svc.Labels[sm.Spec.JobLabel]; got != jobName {
		t.Errorf("jobLabel %q: the Service's value is %q, want %q (the job the alerts select)", sm.Spec.JobLabel, got, jobName)
	}
	ep := only(t, "ServiceMonitor endpoints", sm.Spec.Endpoints)
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
		t.Errorf("endpoint port %q is not a port name of Service %s", ep.Port, svc.Name)
	}
	if ep.Path != "/metrics" || (ep.Scheme != "" && ep.Scheme != "http") {
		t.Errorf("endpoint scrapes %s %s, want http /metrics", ep.Scheme, ep.Path)
	}
	for _, v := range []string{ep.Interval, ep.ScrapeTimeout} {
		if _, err := time.ParseDuration(v); v != "" && err != nil {
			t.Errorf("endpoint duration %q: %v", v, err)
		}
	}
	if !slices.ContainsFunc(ep.Relabelings, func(r operatorRelabel) bool {
		return r.TargetLabel == "node" && slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_pod_node_name"})
	}) {
		t.Error("no relabeling sets node from __meta_kubernetes_pod_node_name (alerts and dashboard use it)")
	}
}

// scrapeLabels are the target labels the alerts and the dashboard may
// rely on: job and instance, and what both ways of scraping add (the
// Prometheus Operator adds namespace, service, pod, container and
// endpoint to every ServiceMonitor target).
func scrapeLabels(t *testing.T, d *deployment) map[string]bool {
	t.Helper()
	plain := map[string]bool{}
	for _, f := range d.scrapeConfigs {
		for _, sc := range f.ScrapeConfigs {
			for _, r := range sc.RelabelConfigs {
				if a := strings.ToLower(r.Action); (a == "" || a == "replace") && !strings.HasPrefix(r.TargetLabel, "__") {
					plain[r.TargetLabel] = true
				}
			}
		}
	}
	operator := setOf("namespace", "service", "pod", "container", "endpoint")
	for _, sm := range d.serviceMonitors {
		for _, ep := range sm.Spec.Endpoints {
			for _, r := range ep.Relabelings {
				if a := strings.ToLower(r.Action); a == "" || a == "replace" {
					operator[r.TargetLabel] = true
				}
			}
		}
	}
	out := setOf("job", "instance")
	for l := range plain {
		if operator[l] {
			out[l] = true
		}
	}
	return out
}

var (
	jobMatcher  = regexp.MustCompile(`\bjob\s*(=~|!=|!~|=)\s*"([^"]*)"`)
	labelsRef   = regexp.MustCompile(`\$labels\.(\w+)`)
	alertNaming = regexp.MustCompile(`^Portforwardd[A-Z][A-Za-z]*$`)
)

func TestAlerts(t *testing.T) {
	d := loadDeployment(t)
	ms := registeredMetrics(t)
	target := scrapeLabels(t, d)
	pr := only(t, "PrometheusRules", d.prometheusRules)

	seen := map[string]bool{}
	used := map[string]bool{}
	for _, g := range pr.Spec.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("rule group %q: want a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			if !alertNaming.MatchString(r.Alert) || seen[r.Alert] {
				t.Errorf("alert %q: want a unique name like PortforwarddSomething", r.Alert)
			}
			seen[r.Alert] = true
			q, err := parsePromQL(r.Expr, false)
			if err != nil {
				t.Errorf("alert %s: %v", r.Alert, err)
				continue
			}
			for _, err := range checkQuery(q, ms, target) {
				t.Errorf("alert %s: %v", r.Alert, err)
			}
			for _, s := range q.selectors {
				used[s.metric] = true
				if !slices.Contains(s.labels, "job") {
					t.Errorf("alert %s: %s is not restricted to job=%q", r.Alert, s.metric, jobName)
				}
			}
			for _, m := range jobMatcher.FindAllStringSubmatch(r.Expr, -1) {
				if m[1] != "=" || m[2] != jobName {
					t.Errorf("alert %s: job%s%q, want job=%q", r.Alert, m[1], m[2], jobName)
				}
			}
			if _, err := time.ParseDuration(r.For); r.For != "" && err != nil {
				t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("alert %s: severity %q, want critical, warning or info", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: want a summary and a description", r.Alert)
			}
			// An aggregation keeps only its grouping labels; a template
			// naming another one renders empty.
			have := setOf(q.grouping...)
			if len(q.grouping) == 0 {
				have = maps.Clone(target)
				for _, s := range q.selectors {
					l, _ := ms.labelsOf(s.metric)
					have = mergeSets(have, l)
				}
			}
			missing := map[string]bool{}
			for _, a := range r.Annotations {
				for _, m := range labelsRef.FindAllStringSubmatch(a, -1) {
					if !have[m[1]] {
						missing[m[1]] = true
					}
				}
			}
			for _, l := range sortedKeys(missing) {
				t.Errorf("alert %s: an annotation uses $labels.%s, which its expression does not keep (%v)", r.Alert, l, sortedKeys(have))
			}
		}
	}
	for _, m := range []string{"up", "portforwardd_dial_errors_total", "portforwardd_limit_hits_total",
		"portforwardd_sessions_active", "portforwardd_limit", "portforwardd_auth_denials_total", "portforwardd_tls_reload_failing",
		"portforwardd_log_lines_dropped_total"} {
		if !used[m] {
			t.Errorf("no alert uses %s", m)
		}
	}
}

// dashPanel is the part of a Grafana panel the test reads.
type dashPanel struct {
	ID         int    `json:"id"`
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // a row's
}

func flatten(ps []dashPanel) []dashPanel {
	var out []dashPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flatten(p.Panels)...)
	}
	return out
}

var labelValues = regexp.MustCompile(`^\s*label_values\((.+),\s*(\w+)\s*\)\s*$`)

func TestDashboard(t *testing.T) {
	d := loadDeployment(t)
	ms := registeredMetrics(t)
	target := scrapeLabels(t, d)
	data, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID           string      `json:"uid"`
		Title         string      `json:"title"`
		SchemaVersion int         `json:"schemaVersion"`
		Panels        []dashPanel `json:"panels"`
		Templating    struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || dash.SchemaVersion < 36 {
		t.Errorf("dashboard uid %q, title %q, schemaVersion %d: want a uid, a title and schema 36 or later", dash.UID, dash.Title, dash.SchemaVersion)
	}

	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Errorf("variable %s: query %s: %v", v.Name, v.Query, err)
				continue
			}
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(series, label)", v.Name, q.Query)
			continue
		}
		pq, err := parsePromQL(m[1], true)
		if err == nil {
			pq.grouping = append(pq.grouping, m[2]) // the label must exist like a grouping label
			for _, err := range checkQuery(pq, ms, target) {
				t.Errorf("variable %s: %v", v.Name, err)
			}
		} else {
			t.Errorf("variable %s: %v", v.Name, err)
		}
	}
	defined := func(name string) bool { return vars[name] || strings.HasPrefix(name, "__") }

	ids := map[int]string{}
	panels := flatten(dash.Panels)
	for i, p := range panels {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 || ids[p.ID] != "" || p.Title == "" {
			t.Errorf("%s: want a unique positive id (taken by %q) and a title", where, ids[p.ID])
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.Datasource != nil {
			for _, m := range grafanaVar.FindAllStringSubmatch(p.Datasource.UID, -1) {
				if !defined(m[1]) {
					t.Errorf("%s: data source $%s is not a dashboard variable", where, m[1])
				}
			}
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no targets", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" || refs[tg.RefID] {
				t.Errorf("%s: target %q: want an expr and a unique refId", where, tg.RefID)
				continue
			}
			refs[tg.RefID] = true
			q, err := parsePromQL(tg.Expr, true)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			for _, err := range checkQuery(q, ms, target) {
				t.Errorf("%s: %v", where, err)
			}
			for _, s := range q.selectors {
				if !slices.Contains(s.labels, "job") {
					t.Errorf("%s: %s is not restricted to $job (other targets export it too)", where, s.metric)
				}
			}
			for _, v := range q.vars {
				if !defined(v) {
					t.Errorf("%s: $%s is not a dashboard variable", where, v)
				}
			}
		}
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v is outside the 24-column grid", where, g)
		}
		for _, o := range panels[:i] {
			h := o.GridPos
			if o.Type != "row" && g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
				t.Errorf("%s overlaps panel %d %q", where, o.ID, o.Title)
			}
		}
	}
	if len(panels) == 0 {
		t.Error("the dashboard has no panels")
	}
}
