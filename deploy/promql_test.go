package deploy

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portforwardd/portforwardd/cri"
	"github.com/portforwardd/portforwardd/server"
)

// A small PromQL reader: enough to find the series and labels an
// expression uses and to refuse what is malformed at the token level
// (unbalanced brackets, unterminated strings, unknown functions, a label
// matcher without an operator). It is not a parser of the grammar.

type tokenKind int

const (
	tokIdent tokenKind = iota
	tokNumber
	tokString
	tokVar // a Grafana variable: $name or ${name}
	tokPunct
)

type token struct {
	kind tokenKind
	text string
}

func isIdentStart(c byte) bool {
	return c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || ('0' <= c && c <= '9') || c == ':' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func lexPromQL(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at %q", s[i:])
			}
			toks = append(toks, token{tokString, s[i : j+1]})
			i = j + 1
		case c == '$':
			j := i + 1
			if j < len(s) && s[j] == '{' {
				k := strings.IndexByte(s[j:], '}')
				if k < 0 {
					return nil, fmt.Errorf("unterminated ${ at %q", s[i:])
				}
				j += k + 1
			} else {
				for j < len(s) && isIdentChar(s[j]) {
					j++
				}
			}
			if j == i+1 {
				return nil, fmt.Errorf("lone $ at %q", s[i:])
			}
			toks = append(toks, token{tokVar, s[i:j]})
			i = j
		case isDigit(c) || (c == '.' && i+1 < len(s) && isDigit(s[i+1])):
			j := i
			for j < len(s) && (isIdentChar(s[j]) && s[j] != ':' || s[j] == '.') {
				j++
			}
			toks = append(toks, token{tokNumber, s[i:j]})
			i = j
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			toks = append(toks, token{tokIdent, s[i:j]})
			i = j
		default:
			if i+1 < len(s) && slices.Contains([]string{"==", "!=", "=~", "!~", "<=", ">="}, s[i:i+2]) {
				toks = append(toks, token{tokPunct, s[i : i+2]})
				i += 2
				continue
			}
			if !strings.ContainsRune("()[]{},=<>+-*/%^@:", rune(c)) {
				return nil, fmt.Errorf("unexpected %q at %q", c, s[i:])
			}
			toks = append(toks, token{tokPunct, s[i : i+1]})
			i++
		}
	}
	return toks, nil
}

var (
	promFunctions = setOf(
		// aggregations
		"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
		"bottomk", "topk", "quantile", "limitk", "limit_ratio",
		// functions
		"abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
		"avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
		"count_over_time", "days_in_month", "day_of_month", "day_of_week", "day_of_year", "deg",
		"delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction",
		"histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters",
		"hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln",
		"log10", "log2", "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear",
		"present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn",
		"sin", "sinh", "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time",
		"sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year", "start", "end")
	promGrouping = setOf("by", "without", "on", "ignoring", "group_left", "group_right")
	promKeywords = setOf("bool", "and", "or", "unless", "offset", "atan2", "inf", "nan", "Inf", "NaN")
	promMatchOps = setOf("=", "!=", "=~", "!~")
)

func setOf(s ...string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, v := range s {
		m[v] = true
	}
	return m
}

// promQuery is what an expression uses.
type promQuery struct {
	selectors []promSelector
	grouping  []string // labels of by, without, on, ignoring, group_left, group_right
	vars      []string // Grafana variables, anywhere (strings included)
}

type promSelector struct {
	metric   string   // empty for a bare {...}
	labels   []string // the label names it matches on
	matchers []promMatcher
}

// promMatcher is one label matcher of a selector: label op "value".
type promMatcher struct {
	label, op, value string // value unquoted
}

var grafanaVar = regexp.MustCompile(`\$\{?(\w+)`)

// parsePromQL reads expr; Grafana's $variables are allowed only with
// grafana set.
func parsePromQL(expr string, grafana bool) (promQuery, error) {
	var q promQuery
	toks, err := lexPromQL(expr)
	if err != nil {
		return q, err
	}
	type frame struct {
		open     string
		grouping bool
		sel      int // for "{": the selector being matched
	}
	var stack []frame
	lastMetric := -1 // token index of the last metric name
	at := func(i int) token {
		if i < 0 || i >= len(toks) {
			return token{}
		}
		return toks[i]
	}
	for i, tk := range toks {
		var top frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch tk.kind {
		case tokVar:
			if !grafana {
				return q, fmt.Errorf("Grafana variable %s outside Grafana", tk.text)
			}
		case tokString:
			if !grafana && strings.Contains(tk.text, "$") {
				return q, fmt.Errorf("Grafana variable in %s outside Grafana", tk.text)
			}
		case tokPunct:
			switch tk.text {
			case "(":
				prev := at(i - 1)
				stack = append(stack, frame{open: "(", grouping: prev.kind == tokIdent && promGrouping[prev.text]})
			case "[":
				stack = append(stack, frame{open: "["})
			case "{":
				if lastMetric != i-1 || i == 0 {
					q.selectors = append(q.selectors, promSelector{})
				}
				stack = append(stack, frame{open: "{", sel: len(q.selectors) - 1})
			case ")", "]", "}":
				want := map[string]string{")": "(", "]": "[", "}": "{"}[tk.text]
				if top.open != want {
					return q, fmt.Errorf("unbalanced %q in %q", tk.text, expr)
				}
				stack = stack[:len(stack)-1]
			}
		case tokIdent:
			switch {
			case top.open == "{":
				op, val := at(i+1), at(i+2)
				if !promMatchOps[op.text] || val.kind != tokString {
					return q, fmt.Errorf("label matcher %s %s %s: want label, =, !=, =~ or !~, and a string", tk.text, op.text, val.text)
				}
				q.selectors[top.sel].labels = append(q.selectors[top.sel].labels, tk.text)
				quoted := val.text
				if strings.HasPrefix(quoted, "'") {
					quoted = `"` + quoted[1:len(quoted)-1] + `"`
				}
				value, err := strconv.Unquote(quoted)
				if err != nil {
					return q, fmt.Errorf("label matcher %s %s %s: %w", tk.text, op.text, val.text, err)
				}
				q.selectors[top.sel].matchers = append(q.selectors[top.sel].matchers, promMatcher{tk.text, op.text, value})
			case top.open == "[":
				return q, fmt.Errorf("identifier %q in a range", tk.text)
			case top.grouping:
				q.grouping = append(q.grouping, tk.text)
			case promGrouping[tk.text] || promKeywords[tk.text]:
			case promFunctions[tk.text]:
				if n := at(i + 1).text; n != "(" && n != "by" && n != "without" {
					return q, fmt.Errorf("%s not followed by (", tk.text)
				}
			case at(i+1).text == "(":
				return q, fmt.Errorf("unknown function %s", tk.text)
			default:
				q.selectors = append(q.selectors, promSelector{metric: tk.text})
				lastMetric = i
			}
		}
	}
	if len(stack) > 0 {
		return q, fmt.Errorf("unclosed %q in %q", stack[len(stack)-1].open, expr)
	}
	for _, m := range grafanaVar.FindAllStringSubmatch(expr, -1) {
		q.vars = append(q.vars, m[1])
	}
	return q, nil
}

// metricSet is the label names of each registered metric.
type metricSet map[string]map[string]bool

// labelsOf returns the labels of a series name, histogram and summary
// series (_bucket, _sum, _count) included. The suffixes are accepted after
// any metric: descriptors do not say which metrics are histograms, and a
// vector with no children yet is not gathered at all.
func (ms metricSet) labelsOf(name string) (map[string]bool, bool) {
	if l, ok := ms[name]; ok {
		return l, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if l, ok := ms[base]; ok {
				if suffix == "_bucket" {
					l = mergeSets(l, setOf("le"))
				}
				return l, true
			}
		}
	}
	return nil, false
}

func mergeSets(sets ...map[string]bool) map[string]bool {
	out := map[string]bool{}
	for _, s := range sets {
		for k := range s {
			out[k] = true
		}
	}
	return out
}

// checkQuery reports every series that is not registered and every label
// no series of expr carries. targetLabels are the labels the scrape adds
// (job, instance, node, ...). "up" is Prometheus's own.
func checkQuery(q promQuery, ms metricSet, targetLabels map[string]bool) []error {
	var errs []error
	all := mergeSets(targetLabels)
	if len(q.selectors) == 0 {
		errs = append(errs, errors.New("selects no series"))
	}
	for _, s := range q.selectors {
		own := map[string]bool{}
		switch l, ok := ms.labelsOf(s.metric); {
		case s.metric == "":
			errs = append(errs, fmt.Errorf("a selector without a metric name (labels %v)", s.labels))
			continue
		case s.metric == "up":
		case !ok:
			errs = append(errs, fmt.Errorf("metric %s is not registered by server.NewMetrics or cri.NewMetrics", s.metric))
			continue
		default:
			own = l
		}
		all = mergeSets(all, own)
		for _, l := range s.labels {
			if !own[l] && !targetLabels[l] && l != "__name__" {
				errs = append(errs, fmt.Errorf("%s has no label %q (its labels: %v; the scrape's: %v)", s.metric, l, sortedKeys(own), sortedKeys(targetLabels)))
			}
		}
	}
	for _, l := range q.grouping {
		if !all[l] {
			errs = append(errs, fmt.Errorf("grouping by %q, a label none of the series has", l))
		}
	}
	return errs
}

func sortedKeys(m map[string]bool) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	slices.Sort(k)
	return k
}

// descFormat is how client_golang prints a *prometheus.Desc. It has no
// accessors, and neither the exposition nor a Gatherer lists a vector
// until it has a child, so a fresh registry's names come from Describe.
var (
	descFormat = regexp.MustCompile(`^Desc\{fqName: "((?:[^"\\]|\\.)*)", help: "(?:[^"\\]|\\.)*", (?:unit: "(?:[^"\\]|\\.)*", )?constLabels: \{(.*)\}, variableLabels: \{([^}]*)\}\}$`)
	descConst  = regexp.MustCompile(`(\w+)="(?:[^"\\]|\\.)*"`)
)

// registeredMetrics returns the metrics the daemon registers:
// server.NewMetrics (with the Go and process collectors) and
// cri.NewMetrics on its registerer, as cmd/portforwardd does.
func registeredMetrics(t *testing.T) metricSet {
	t.Helper()
	m := server.NewMetrics("test")
	cri.NewMetrics(m.Registerer())
	c, ok := m.Registerer().(prometheus.Collector)
	if !ok {
		t.Fatalf("server.Metrics.Registerer() is a %T, which cannot describe its metrics", m.Registerer())
	}
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	ms := metricSet{}
	for d := range ch {
		p := descFormat.FindStringSubmatch(d.String())
		if p == nil {
			t.Errorf("cannot read descriptor %s", d)
			continue
		}
		labels := map[string]bool{}
		for _, cl := range descConst.FindAllStringSubmatch(p[2], -1) {
			labels[cl[1]] = true
		}
		for l := range strings.SplitSeq(p[3], ",") {
			if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
				labels[l] = true
			}
		}
		ms[p[1]] = labels
	}
	for _, name := range []string{"portforwardd_sessions_active", "portforwardd_cri_calls_total", "go_goroutines"} {
		if _, ok := ms[name]; !ok {
			t.Fatalf("%s is not among the described metrics %v: the descriptor format changed?", name, slices.Sorted(maps.Keys(ms)))
		}
	}
	return ms
}

func TestPromQLCheck(t *testing.T) {
	ms := metricSet{
		"portforwardd_bytes_total":           setOf("protocol", "direction"),
		"portforwardd_dial_duration_seconds": {},
	}
	target := setOf("job", "instance", "node")
	tests := []struct {
		name, expr string
		grafana    bool
		wantErr    string // substring; empty for none
	}{
		{"fine", `sum by (job, direction) (rate(portforwardd_bytes_total{job="a", direction!~"x|y"}[5m])) > 0`, false, ""},
		{"aggregation after", `sum(rate(portforwardd_bytes_total[5m])) by (protocol)`, false, ""},
		{"histogram", `histogram_quantile(0.99, sum by (le) (rate(portforwardd_dial_duration_seconds_bucket[5m])))`, false, ""},
		{"up", `up{job="a"} == 0`, false, ""},
		{"grafana", `rate(portforwardd_bytes_total{node=~"$node"}[$__rate_interval])`, true, ""},
		{"unknown metric", `portforwardd_byte_total`, false, "not registered"},
		{"unknown histogram", `portforwardd_dial_seconds_bucket`, false, "not registered"},
		{"unknown label", `portforwardd_bytes_total{dirction="x"}`, false, `no label "dirction"`},
		{"unknown grouping", `sum by (pod_uid) (portforwardd_bytes_total)`, false, `"pod_uid"`},
		{"le outside a histogram", `sum by (le) (portforwardd_bytes_total)`, false, `"le"`},
		{"unbalanced", `sum(rate(portforwardd_bytes_total[5m])`, false, "unclosed"},
		{"crossed", `sum(rate(portforwardd_bytes_total[5m)])`, false, "unbalanced"},
		{"unterminated", `portforwardd_bytes_total{protocol="x}`, false, "unterminated"},
		{"unknown function", `rat(portforwardd_bytes_total[5m])`, false, "unknown function"},
		{"matcher without operator", `portforwardd_bytes_total{protocol}`, false, "label matcher"},
		{"no metric name", `{job="a"}`, false, "without a metric name"},
		{"variable outside Grafana", `rate(portforwardd_bytes_total[$__rate_interval])`, false, "outside Grafana"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := parsePromQL(tt.expr, tt.grafana)
			errs := []error{err}
			if err == nil {
				errs = checkQuery(q, ms, target)
			}
			got := errors.Join(errs...)
			switch {
			case tt.wantErr == "" && got != nil:
				t.Errorf("%s: got %v, want no error", tt.expr, got)
			case tt.wantErr != "" && (got == nil || !strings.Contains(got.Error(), tt.wantErr)):
				t.Errorf("%s: got %v, want an error containing %q", tt.expr, got, tt.wantErr)
			}
		})
	}
}
