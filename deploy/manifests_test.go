package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"
)

// The names the files agree on.
const (
	appNamespace   = "portforwardd"
	serviceAccount = "portforwardd"
	containerName  = "portforwardd"
	metricsService = "portforwardd-metrics"
	tlsSecret      = "portforwardd-tls"
	netnsDir       = "/run/netns"
	// processHeadroom is what the daemon needs besides its stream buffers
	// (--buffer-bytes): about 35 MiB of RSS after the benchmark suite
	// (README, "Performance"), up to 64 MiB of bulk copy buffers
	// (streams: at most 64 of 1 MiB in the process), and a margin.
	processHeadroom = 128 << 20
)

// deployment is every YAML document under deploy/, decoded.
type deployment struct {
	namespaces          []*corev1.Namespace
	serviceAccounts     []*corev1.ServiceAccount
	services            []*corev1.Service
	daemonSets          []*appsv1.DaemonSet
	clusterRoles        []*rbacv1.ClusterRole
	clusterRoleBindings []*rbacv1.ClusterRoleBinding
	serviceMonitors     []*serviceMonitor
	prometheusRules     []*prometheusRule
	kubeletConfigs      []*kubeletConfiguration
	scrapeConfigs       []*scrapeConfigFile
}

// newDecoder decodes, strictly, the API groups deploy/ may use; any other
// kind is an error.
func newDecoder() (runtime.Decoder, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer(), nil
}

func loadDeployment(t *testing.T) *deployment {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no *.yaml files in deploy/ (%v)", err)
	}
	dec, err := newDecoder()
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := splitDocuments(data)
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		for i, doc := range docs {
			if err := d.add(dec, file, doc); err != nil {
				t.Errorf("%s, document %d: %v", file, i+1, err)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return d
}

// splitDocuments returns the YAML documents of data that hold more than
// comments.
func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if !onlyComments(doc) {
			docs = append(docs, doc)
		}
	}
}

func onlyComments(doc []byte) bool {
	for line := range strings.Lines(string(doc)) {
		line = strings.TrimSpace(line)
		if line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

// add decodes one document strictly into the type its apiVersion and kind
// name.
func (d *deployment) add(dec runtime.Decoder, file string, doc []byte) error {
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	switch gk := tm.APIVersion + " " + tm.Kind; gk {
	case " ":
		// prometheus.yaml is a piece of prometheus.yml, not an object.
		if file != "prometheus.yaml" {
			return errors.New("no apiVersion and kind (only prometheus.yaml may hold a non-Kubernetes document)")
		}
		var c scrapeConfigFile
		if err := sigsyaml.UnmarshalStrict(doc, &c); err != nil {
			return fmt.Errorf("scrape configuration: %w", err)
		}
		d.scrapeConfigs = append(d.scrapeConfigs, &c)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		var sm serviceMonitor
		if err := sigsyaml.UnmarshalStrict(doc, &sm); err != nil {
			return fmt.Errorf("%s: %w", gk, err)
		}
		d.serviceMonitors = append(d.serviceMonitors, &sm)
	case "monitoring.coreos.com/v1 PrometheusRule":
		var pr prometheusRule
		if err := sigsyaml.UnmarshalStrict(doc, &pr); err != nil {
			return fmt.Errorf("%s: %w", gk, err)
		}
		d.prometheusRules = append(d.prometheusRules, &pr)
	case "kubelet.config.k8s.io/v1beta1 KubeletConfiguration":
		var kc kubeletConfiguration
		if err := sigsyaml.UnmarshalStrict(doc, &kc); err != nil {
			return fmt.Errorf("%s: %w", gk, err)
		}
		d.kubeletConfigs = append(d.kubeletConfigs, &kc)
	default:
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return err
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			d.namespaces = append(d.namespaces, o)
		case *corev1.ServiceAccount:
			d.serviceAccounts = append(d.serviceAccounts, o)
		case *corev1.Service:
			d.services = append(d.services, o)
		case *appsv1.DaemonSet:
			d.daemonSets = append(d.daemonSets, o)
		case *rbacv1.ClusterRole:
			d.clusterRoles = append(d.clusterRoles, o)
		case *rbacv1.ClusterRoleBinding:
			d.clusterRoleBindings = append(d.clusterRoleBindings, o)
		default:
			return fmt.Errorf("%s: no test checks this kind; teach deployment.add about it", gk)
		}
	}
	return nil
}

// The Prometheus Operator's objects and the kubelet's configuration are not
// in k8s.io/api: these mirror the fields deploy/ uses, so that strict
// decoding still catches a misspelt or misplaced field.

type objectMeta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

type serviceMonitor struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        objectMeta `json:"metadata"`
	Spec            struct {
		JobLabel          string               `json:"jobLabel"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string            `json:"port"`
			Path          string            `json:"path"`
			Scheme        string            `json:"scheme"`
			Interval      string            `json:"interval"`
			ScrapeTimeout string            `json:"scrapeTimeout"`
			Relabelings   []operatorRelabel `json:"relabelings"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type prometheusRule struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        objectMeta `json:"metadata"`
	Spec            struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

type kubeletConfiguration struct {
	metav1.TypeMeta          `json:",inline"`
	ContainerRuntimeEndpoint string `json:"containerRuntimeEndpoint"`
	ImageServiceEndpoint     string `json:"imageServiceEndpoint"`
}

// TestDecodeIsStrict makes sure the decoding above refuses what the API
// server would: without it, every check below could pass on a manifest
// whose misspelt field is silently dropped.
func TestDecodeIsStrict(t *testing.T) {
	dec, err := newDecoder()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, file, doc string }{
		{"unknown field", "x.yaml", "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\nautomountToken: true\n"},
		{"duplicate field", "x.yaml", "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\nmetadata: {name: b}\n"},
		{"misplaced field", "x.yaml", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: a}\nspec: {hostNetwork: true}\n"},
		{"kind outside the scheme", "x.yaml", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: a}\n"},
		{"unknown ServiceMonitor field", "x.yaml", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: a}\nspec: {endpoint: []}\n"},
		{"unknown rule field", "x.yaml", "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: a}\nspec: {groups: [{name: g, rules: [{alert: A, expression: up}]}]}\n"},
		{"unknown scrape field", "prometheus.yaml", "scrape_configs: [{job_name: a, relabel_config: []}]\n"},
		{"object without a kind", "x.yaml", "metadata: {name: a}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := (&deployment{}).add(dec, tt.file, []byte(tt.doc)); err == nil {
				t.Errorf("decoding %q: got no error, want one", tt.doc)
			}
		})
	}
}

// TestIdentity checks that the files agree on the namespace and the
// service account the daemon runs as.
func TestIdentity(t *testing.T) {
	d := loadDeployment(t)
	ns := only(t, "Namespaces", d.namespaces)
	sa := only(t, "ServiceAccounts", d.serviceAccounts)
	ds := only(t, "DaemonSets", d.daemonSets)
	if ns.Name != appNamespace || sa.Name != serviceAccount || sa.Namespace != ns.Name {
		t.Errorf("ServiceAccount %s/%s in Namespace %s: want %s/%s", sa.Namespace, sa.Name, ns.Name, appNamespace, serviceAccount)
	}
	if got := ds.Spec.Template.Spec.ServiceAccountName; got != sa.Name || ds.Namespace != sa.Namespace {
		t.Errorf("DaemonSet %s/%s runs as %q: want ServiceAccount %s/%s", ds.Namespace, ds.Name, got, sa.Namespace, sa.Name)
	}
	if a := ds.Spec.Template.Spec.AutomountServiceAccountToken; a != nil && !*a {
		t.Error("automountServiceAccountToken is false: --auth-kubeconfig=in-cluster needs the token")
	}
	for _, s := range d.services {
		if s.Namespace != ns.Name {
			t.Errorf("Service %s in namespace %q, want %q", s.Name, s.Namespace, ns.Name)
		}
	}
	for _, m := range d.serviceMonitors {
		if m.Metadata.Namespace != ns.Name {
			t.Errorf("ServiceMonitor %s in namespace %q, want %q", m.Metadata.Name, m.Metadata.Namespace, ns.Name)
		}
	}
	for _, r := range d.prometheusRules {
		if r.Metadata.Namespace != ns.Name {
			t.Errorf("PrometheusRule %s in namespace %q, want %q", r.Metadata.Name, r.Metadata.Namespace, ns.Name)
		}
	}
}

// rule is one (API group, resource, verb) triple a ClusterRole grants.
type rule struct{ group, resource, verb string }

func expand(rules []rbacv1.PolicyRule) []rule {
	var out []rule
	for _, r := range rules {
		if len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
			out = append(out, rule{"?", fmt.Sprint(r.NonResourceURLs, r.ResourceNames), "?"})
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, rule{g, res, v})
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b rule) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return slices.Compact(out)
}

func TestRBAC(t *testing.T) {
	d := loadDeployment(t)
	roles := map[string]*rbacv1.ClusterRole{}
	for _, r := range d.clusterRoles {
		roles[r.Name] = r
	}

	// Whatever is bound to the daemon's ServiceAccount grants exactly the
	// two reviews of delegated authentication and authorization.
	var granted []rbacv1.PolicyRule
	bound := 0
	for _, b := range d.clusterRoleBindings {
		if !slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Name == serviceAccount && s.Namespace == appNamespace
		}) {
			continue
		}
		bound++
		r, ok := roles[b.RoleRef.Name]
		if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.APIGroup != rbacv1.GroupName || !ok {
			t.Errorf("ClusterRoleBinding %s refers to %+v, which deploy/ does not define", b.Name, b.RoleRef)
			continue
		}
		granted = append(granted, r.Rules...)
	}
	if bound == 0 {
		t.Errorf("no ClusterRoleBinding binds ServiceAccount %s/%s", appNamespace, serviceAccount)
	}
	want := []rule{{"authentication.k8s.io", "tokenreviews", "create"}, {"authorization.k8s.io", "subjectaccessreviews", "create"}}
	if got := expand(granted); !slices.Equal(got, want) {
		t.Errorf("the daemon's ServiceAccount is granted %v, want exactly %v", got, want)
	}

	// The clients' example: create on nodes/proxy, nothing else.
	client, ok := roles["portforwardd-client"]
	if !ok {
		t.Fatal("no ClusterRole portforwardd-client")
	}
	if got, want := expand(client.Rules), []rule{{"", "nodes/proxy", "create"}}; !slices.Equal(got, want) {
		t.Errorf("ClusterRole portforwardd-client grants %v, want exactly %v", got, want)
	}
}

// TestKubeletConfig checks that the kubelet is pointed at the socket the
// CRI-O unit serves, and images at the runtime the proxy forwards to.
func TestKubeletConfig(t *testing.T) {
	d := loadDeployment(t)
	kc := only(t, "KubeletConfigurations", d.kubeletConfigs)
	args := execStart(t, "portforwardd-crio.service")
	if v := listenAddress(t, "portforwardd-crio.service", "cri-listen"); kc.ContainerRuntimeEndpoint != v {
		t.Errorf("containerRuntimeEndpoint %q: want the unit's --cri-listen %q", kc.ContainerRuntimeEndpoint, v)
	}
	if v, _ := flagValue(args, "cri-upstream"); kc.ImageServiceEndpoint != v {
		t.Errorf("imageServiceEndpoint %q: want the unit's --cri-upstream %q (images bypass the proxy)", kc.ImageServiceEndpoint, v)
	}
}

// TestContainerfile checks that the image's build sets a version variable
// that exists and that its entrypoint is the binary it copies.
func TestContainerfile(t *testing.T) {
	data, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	cf := string(data)
	m := regexp.MustCompile(`-X main\.(\w+)=`).FindStringSubmatch(cf)
	if m == nil {
		t.Fatal("Containerfile: no -X main.<var>= in the build")
	}
	mainGo, err := os.ReadFile("../cmd/portforwardd/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^var ` + m[1] + ` = ""`).Match(mainGo) {
		t.Errorf("Containerfile sets main.%s, but cmd/portforwardd/main.go has no `var %s = \"\"`", m[1], m[1])
	}
	if !strings.Contains(cf, "./cmd/portforwardd") || !strings.Contains(cf, `ENTRYPOINT ["/portforwardd"]`) ||
		!strings.Contains(cf, "COPY --from=build /out/portforwardd /portforwardd") {
		t.Error("Containerfile: want ./cmd/portforwardd built to /out/portforwardd, copied to /portforwardd, the ENTRYPOINT")
	}
	if regexp.MustCompile(`(?m)^FROM \S*:nonroot\b`).MatchString(cf) {
		t.Error("Containerfile: a nonroot base image; setns needs root with CAP_SYS_ADMIN")
	}
}
