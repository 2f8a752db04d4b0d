package deploy

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/portforwardd/portforwardd/server"
)

// readmeTable returns the rows of the first table after the heading
// "## "+section in the repository's README.md, each a list of cells.
func readmeTable(t *testing.T, section string) [][]string {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "\n## "+section+"\n")
	if !ok {
		t.Fatalf("README.md has no section %q", section)
	}
	var rows [][]string
	for line := range strings.Lines(rest) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "## ") {
			break
		}
		if !strings.HasPrefix(line, "|") {
			if len(rows) > 0 {
				break
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if strings.HasPrefix(cells[0], "---") || strings.HasPrefix(cells[0], ":--") {
			continue
		}
		rows = append(rows, cells)
	}
	if len(rows) < 2 {
		t.Fatalf("README.md, %s: no table", section)
	}
	return rows[1:] // without the header
}

var (
	backticked = regexp.MustCompile("`([^`]*)`")
	flagName   = regexp.MustCompile("`--([a-z][a-z0-9-]*)`")
)

// sameDefault compares the default -h prints with the README's, as a
// duration, a byte count or a string.
func sameDefault(usage, readme string) bool {
	if usage == readme {
		return true
	}
	if a, err := time.ParseDuration(usage); err == nil {
		b, err := time.ParseDuration(readme)
		return err == nil && a == b
	}
	if a, err := strconv.ParseInt(usage, 10, 64); err == nil {
		for suffix, mult := range map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30} {
			if n, ok := strings.CutSuffix(readme, suffix); ok {
				b, err := strconv.ParseInt(n, 10, 64)
				return err == nil && a == b*mult
			}
		}
	}
	return false
}

// TestReadmeFlags checks the README's flag table against portforwardd -h:
// the same flags, and the same defaults.
func TestReadmeFlags(t *testing.T) {
	flags := daemonFlags(t)
	documented := map[string]bool{}
	for _, row := range readmeTable(t, "Flags") {
		names := flagName.FindAllStringSubmatch(row[0], -1)
		if len(names) == 0 || len(row) < 3 {
			t.Errorf("README flag table: row %q names no flag", row)
			continue
		}
		def := backticked.FindAllStringSubmatch(row[1], -1)
		single := len(def) == 1 && row[1] == "`"+def[0][1]+"`"
		for _, n := range names {
			name := n[1]
			documented[name] = true
			f, ok := flags[name]
			switch {
			case !ok:
				t.Errorf("README documents --%s, which portforwardd -h does not list", name)
			case f.def == "" && single:
				t.Errorf("README: --%s defaults to %s; portforwardd -h gives no default", name, row[1])
			case f.def != "" && !single:
				t.Errorf("README: --%s default %q; portforwardd -h says %q", name, row[1], f.def)
			case f.def != "" && !sameDefault(f.def, def[0][1]):
				t.Errorf("README: --%s defaults to %s; portforwardd -h says %q", name, row[1], f.def)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(flags)) {
		if !documented[name] {
			t.Errorf("portforwardd -h lists --%s, which README.md's flag table does not document", name)
		}
	}
}

// parenthesised is a list of values in a label cell: "result (`a`, `b`)".
var parenthesised = regexp.MustCompile(`\s*\([^)]*\)`)

// readmeMetrics returns README.md's metrics table: for each metric (with
// the portforwardd_ prefix), each label and the values listed for it.
func readmeMetrics(t *testing.T) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	for _, row := range readmeTable(t, "Metrics") {
		m := backticked.FindStringSubmatch(row[0])
		if m == nil || len(row) < 3 {
			t.Errorf("README metrics table: row %q names no metric", row)
			continue
		}
		labels := map[string][]string{}
		// Split on the commas outside parentheses.
		depth, start := 0, 0
		cell := row[1] + ","
		for i, c := range cell {
			switch c {
			case '(':
				depth++
			case ')':
				depth--
			case ',':
				if depth > 0 {
					continue
				}
				part := strings.TrimSpace(cell[start:i])
				start = i + 1
				if part == "" {
					continue
				}
				name := strings.TrimSpace(parenthesised.ReplaceAllString(part, ""))
				var values []string
				if p := strings.Index(part, "("); p >= 0 {
					for _, v := range backticked.FindAllStringSubmatch(part[p:], -1) {
						values = append(values, v[1])
					}
				}
				labels[name] = values
			}
		}
		out["portforwardd_"+m[1]] = labels
	}
	return out
}

// TestReadmeMetrics checks the README's metrics table against what the
// daemon registers: the same portforwardd_ metrics, with the same labels.
func TestReadmeMetrics(t *testing.T) {
	ms := registeredMetrics(t)
	doc := readmeMetrics(t)
	for _, name := range slices.Sorted(maps.Keys(ms)) {
		if !strings.HasPrefix(name, "portforwardd_") {
			continue
		}
		labels, ok := doc[name]
		if !ok {
			t.Errorf("%s is registered but not in README.md's metrics table", name)
			continue
		}
		if got, want := slices.Sorted(maps.Keys(labels)), sortedKeys(ms[name]); !slices.Equal(got, want) {
			t.Errorf("README.md: %s has labels %v; registered with %v", name, got, want)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(doc)) {
		if _, ok := ms[name]; !ok {
			t.Errorf("README.md documents %s, which the daemon does not register", name)
		}
	}
}

// configuredLimits returns the values of portforwardd_limit's limit label
// that a server exports.
func configuredLimits(t *testing.T) []string {
	t.Helper()
	m := server.NewMetrics("test")
	server.New(server.Config{Metrics: m})
	families, err := m.Registerer().(prometheus.Gatherer).Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range families {
		if f.GetName() != "portforwardd_limit" {
			continue
		}
		for _, metric := range f.GetMetric() {
			out = append(out, labelValue(metric, "limit"))
		}
	}
	if len(out) == 0 {
		t.Fatal("a new server exports no portforwardd_limit series")
	}
	return out
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestLabelValues checks the label values the alerts and the dashboard
// match on: portforwardd_limit's against the limits a server exports, the
// others against the values README.md lists for that label (an exact
// match, or each alternative of a plain a|b|c regular expression).
func TestLabelValues(t *testing.T) {
	d := loadDeployment(t)
	doc := readmeMetrics(t)
	limits := configuredLimits(t)
	for _, l := range limits {
		if !slices.Contains(doc["portforwardd_limit_hits_total"]["limit"], l) {
			t.Errorf("README.md: limit_hits_total's limit values %v miss %q, a limit portforwardd_limit exports", doc["portforwardd_limit_hits_total"]["limit"], l)
		}
	}
	var exprs []string
	for _, r := range only(t, "PrometheusRules", d.prometheusRules).Spec.Groups {
		for _, rule := range r.Rules {
			exprs = append(exprs, rule.Expr)
		}
	}
	data, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`"expr":\s*"((?:[^"\\]|\\.)*)"`).FindAllStringSubmatch(string(data), -1) {
		e, err := strconv.Unquote(`"` + m[1] + `"`)
		if err != nil {
			t.Fatalf("dashboard expr %s: %v", m[1], err)
		}
		exprs = append(exprs, e)
	}
	plain := regexp.MustCompile(`^[a-z0-9_]+(\|[a-z0-9_]+)*$`)
	checked := 0
	for _, e := range exprs {
		q, err := parsePromQL(e, true)
		if err != nil {
			continue // TestAlerts and TestDashboard report it
		}
		for _, s := range q.selectors {
			for _, m := range s.matchers {
				if m.label == "job" || m.label == "node" || strings.Contains(m.value, "$") {
					continue
				}
				known := doc[s.metric][m.label]
				if s.metric == "portforwardd_limit" && m.label == "limit" {
					known = limits
				}
				if len(known) == 0 {
					continue
				}
				values := []string{m.value}
				if m.op == "=~" || m.op == "!~" {
					if !plain.MatchString(m.value) {
						continue
					}
					values = strings.Split(m.value, "|")
				}
				for _, v := range values {
					checked++
					if !slices.Contains(known, v) {
						t.Errorf("%s{%s%s%q} in %q: %q is not one of its values %v", s.metric, m.label, m.op, m.value, e, v, known)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Error("no label value was checked: the alerts match on limit, reason and result")
	}
}
