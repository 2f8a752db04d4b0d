package deploy

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// daemonFlag is one flag of `portforwardd -h`.
type daemonFlag struct {
	name, def string // def: the "(default ...)" text, if any
}

// usageFlag matches the first line of one flag in the usage of the
// standard flag package ("  -name type") and of pflag
// ("  -n, --name type").
var (
	usageFlag    = regexp.MustCompile(`^ {2,}(?:-\w, )?--?(\w[\w.-]*)`)
	usageDefault = regexp.MustCompile(`\(default (.+)\)\s*$`)
)

// parseUsage reads the flags and their defaults from -h output.
func parseUsage(out string) map[string]daemonFlag {
	flags := map[string]daemonFlag{}
	var cur *daemonFlag
	var text strings.Builder
	done := func() {
		if cur == nil {
			return
		}
		if m := usageDefault.FindStringSubmatch(strings.TrimSpace(text.String())); m != nil {
			cur.def = strings.Trim(m[1], `"`)
		}
		flags[cur.name] = *cur
	}
	for line := range strings.Lines(out) {
		if m := usageFlag.FindStringSubmatch(line); m != nil {
			done()
			cur = &daemonFlag{name: m[1]}
			text.Reset()
		}
		text.WriteString(line)
	}
	done()
	return flags
}

// daemonFlags runs `portforwardd -h` (built as the Containerfile builds
// it) and returns its flags.
func daemonFlags(t *testing.T) map[string]daemonFlag {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), daemonBinary(t), "-h")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	flags := parseUsage(out.String())
	// -h exits 0 today; tolerate a non-zero exit (pflag's convention) as
	// long as the usage came out, but not a failed build.
	var exit *exec.ExitError
	if err != nil && (!errors.As(err, &exit) || len(flags) == 0) {
		t.Fatalf("portforwardd -h: %v\n%s", err, out.String())
	}
	// The flags every deployment relies on (DESIGN.md's contract): if these
	// are missing the usage was not parsed.
	for _, name := range []string{"listen", "metrics-listen", "netns-dir"} {
		if _, ok := flags[name]; !ok {
			t.Fatalf("no --%s in the usage of portforwardd -h; is it still in the form \"  -name type\"?\n%s", name, out.String())
		}
	}
	return flags
}

func TestParseUsage(t *testing.T) {
	out := "Usage of portforwardd:\n" +
		"  -drain-timeout duration\n    \ton SIGTERM, how long (default 30s)\n" +
		"  -listen host:port\n    \taddress of the listener (default \"127.0.0.1:10350\")\n" +
		"  -pprof\n    \tserve /debug/pprof/\n" +
		"  -v, --verbose int\n    \t-1 is quiet\n" +
		"      --log-format string   text or json (default \"text\")\n"
	got := parseUsage(out)
	want := map[string]daemonFlag{
		"drain-timeout": {"drain-timeout", "30s"},
		"listen":        {"listen", "127.0.0.1:10350"},
		"pprof":         {"pprof", ""},
		"verbose":       {"verbose", ""},
		"log-format":    {"log-format", "text"},
	}
	if len(got) != len(want) {
		t.Errorf("parseUsage: got %v, want %v", got, want)
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("parseUsage, flag %s: got %+v, want %+v", name, got[name], w)
		}
	}
}

// execStart returns the arguments of a systemd unit's ExecStart after the
// program, with continuation lines joined.
func execStart(t *testing.T, unit string) []string {
	t.Helper()
	data, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.ReplaceAll(string(data), "\\\n", " ")
	for line := range strings.Lines(joined) {
		if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
			f := strings.Fields(rest)
			if len(f) == 0 || !strings.HasSuffix(f[0], "/portforwardd") {
				t.Fatalf("%s: ExecStart %q does not run portforwardd", unit, rest)
			}
			return f[1:]
		}
	}
	t.Fatalf("%s: no ExecStart=", unit)
	return nil
}

// unitSetting returns the value of a [Service] setting of a unit.
func unitSetting(t *testing.T, unit, key string) string {
	t.Helper()
	data, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			return v
		}
	}
	return ""
}

// TestFlagsExist checks every flag the DaemonSet and the systemd units
// pass against the daemon's own usage, and that each gives the daemon
// time to drain before it is killed.
func TestFlagsExist(t *testing.T) {
	flags := daemonFlags(t)
	x := loadDaemon(t)
	ds := x.ds

	sources := map[string][]string{
		"daemonset.yaml":            x.args,
		"portforwardd.service":      execStart(t, "portforwardd.service"),
		"portforwardd-crio.service": execStart(t, "portforwardd-crio.service"),
	}
	for source, args := range sources {
		t.Run(source, func(t *testing.T) {
			for _, a := range args {
				if !strings.HasPrefix(a, "-") {
					continue
				}
				name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if _, ok := flags[name]; !ok {
					t.Errorf("%s passes %q: portforwardd has no flag --%s", source, a, name)
				}
			}
		})
	}

	drain := func(t *testing.T, args []string) time.Duration {
		v, ok := flagValue(args, "drain-timeout")
		if !ok {
			v = flags["drain-timeout"].def
		}
		dt, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("drain timeout %q: %v", v, err)
		}
		return dt
	}
	t.Run("grace", func(t *testing.T) {
		if _, ok := flags["drain-timeout"]; !ok {
			t.Skip("the daemon has no --drain-timeout")
		}
		dt := drain(t, sources["daemonset.yaml"])
		if g := ds.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= dt {
			t.Errorf("DaemonSet terminationGracePeriodSeconds %v: want more than the drain timeout %v", g, dt)
		}
		for _, unit := range []string{"portforwardd.service", "portforwardd-crio.service"} {
			stop, err := time.ParseDuration(unitSetting(t, unit, "TimeoutStopSec"))
			if dt := drain(t, sources[unit]); err != nil || stop <= dt {
				t.Errorf("%s: TimeoutStopSec %v (%v): want more than the drain timeout %v", unit, stop, err, dt)
			}
		}
	})
}
