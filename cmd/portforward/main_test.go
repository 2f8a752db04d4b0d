package main

import (
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args      []string
		pod, ns   string
		ports     []string
		addresses []string
		ok        bool
	}{
		{[]string{"web", "8080"}, "web", "default", []string{"8080"}, []string{"localhost"}, true},
		{[]string{"-n", "prod", "pod/web", ":80", "9000:90"}, "web", "prod", []string{":80", "9000:90"}, []string{"localhost"}, true},
		{[]string{"pods/web", "80", "--namespace=kube-system", "--address", "0.0.0.0,::1"}, "web", "kube-system", []string{"80"}, []string{"0.0.0.0", "::1"}, true},
		{[]string{"po/web", "80"}, "web", "default", []string{"80"}, []string{"localhost"}, true},
		// kubectl matches resource types whatever their case (its REST
		// mapper lower-cases them).
		{[]string{"Pod/web", "80"}, "web", "default", []string{"80"}, []string{"localhost"}, true},
		{[]string{"PODS/web", "80"}, "web", "default", []string{"80"}, []string{"localhost"}, true},
		{[]string{"Po/Web", "80"}, "Web", "default", []string{"80"}, []string{"localhost"}, true},
		{[]string{"deployment/web", "80"}, "", "", nil, nil, false},
		{[]string{"pod/", "80"}, "", "", nil, nil, false},
		// kubectl: "arguments in resource/name form may not have more
		// than one slash"; a pod's name has none.
		{[]string{"pod/web/x", "80"}, "", "", nil, nil, false},
		{[]string{"pods/a/b/c", "80"}, "", "", nil, nil, false},
		{[]string{"web"}, "", "", nil, nil, false},
		{[]string{"--bogus", "web", "80"}, "", "", nil, nil, false},
	}
	for _, tt := range tests {
		o, err := parseArgs(tt.args, io.Discard)
		if (err == nil) != tt.ok {
			t.Errorf("parseArgs(%q): err %v, want ok=%v", tt.args, err, tt.ok)
			continue
		}
		if !tt.ok {
			continue
		}
		if o.pod != tt.pod || o.namespace != tt.ns || !slices.Equal(o.ports, tt.ports) || !slices.Equal(o.addresses, tt.addresses) {
			t.Errorf("parseArgs(%q): got pod %q ns %q ports %q addresses %q", tt.args, o.pod, o.namespace, o.ports, o.addresses)
		}
	}
}

// TestHelpGoesToStdout: -h and --help print the usage on standard output
// and exit 0, as kubectl does, so that `portforward --help | less` pages
// it; it went to standard error.
func TestHelpGoesToStdout(t *testing.T) {
	for _, flag := range []string{"-h", "--help"} {
		var stdout, stderr strings.Builder
		if code := run([]string{flag}, &stdout, &stderr, nil); code != 0 {
			t.Errorf("%s: exit %d, want 0", flag, code)
		}
		if !strings.HasPrefix(stdout.String(), usage+"\n") || !strings.Contains(stdout.String(), "--transport") {
			t.Errorf("%s: stdout %q, want the usage and the flags", flag, stdout.String())
		}
		if stderr.Len() != 0 {
			t.Errorf("%s: stderr %q, want nothing", flag, stderr.String())
		}
	}
}

// TestVersion: --version prints the version on standard output and exits
// 0, with no pod or port needed, and without reaching any server.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"--version", "--server", "http://127.0.0.1:1", "web", "80"}} {
		var stdout, stderr strings.Builder
		if code := run(args, &stdout, &stderr, nil); code != 0 {
			t.Errorf("%q: exit %d, want 0; stderr %q", args, code, stderr.String())
		}
		if got := stdout.String(); got != "portforward dev\n" {
			t.Errorf("%q: stdout %q, want %q", args, got, "portforward dev\n")
		}
		if stderr.Len() != 0 {
			t.Errorf("%q: stderr %q, want nothing", args, stderr.String())
		}
	}
}

// TestEmptyRemotePort: a spec with nothing after its colon ("5000:",
// ":"), or an empty one, fails with kubectl's "remote port cannot be
// empty" (its convertPodNamedPortToNumber, run before client-go's
// parser) whatever the transport, before any server is asked; it was
// strconv's `parsing "": invalid syntax`.
// TestNamedRemotePort: a port name, which kubectl looks up in the pod's
// spec, is refused with a line that says to give the number, for every
// transport and before any server is asked; what is not a port name
// keeps the parser's message.
func TestNamedRemotePort(t *testing.T) {
	for _, transport := range []string{"auto", "raw", "h2", "spdy", "websocket"} {
		for _, tc := range []struct{ spec, want string }{
			{"8080:http", "error: remote port 'http' is a name: give its number (portforward asks the node, which cannot look names up in the pod's spec)\n"},
			{"metrics-9", "error: remote port 'metrics-9' is a name: give its number (portforward asks the node, which cannot look names up in the pod's spec)\n"},
			{"8080:HTTP", "error: error parsing remote port 'HTTP'"},
			{"8080:-1", "error: error parsing remote port '-1'"},
		} {
			var stdout, stderr strings.Builder
			code := run([]string{"--server", "http://127.0.0.1:1", "--transport", transport, "web", "80", tc.spec}, &stdout, &stderr, nil)
			if code != 1 || !strings.HasPrefix(stderr.String(), tc.want) || strings.Count(stderr.String(), "\n") != 1 || stdout.Len() != 0 {
				t.Errorf("--transport %s web 80 %q: exit %d, stdout %q, stderr %q; want exit 1, one line starting %q", transport, tc.spec, code, stdout.String(), stderr.String(), tc.want)
			}
		}
	}
}

func TestEmptyRemotePort(t *testing.T) {
	for _, transport := range []string{"auto", "raw", "h2", "spdy", "websocket"} {
		for _, spec := range []string{"5000:", ":", ""} {
			var stdout, stderr strings.Builder
			// Port 1 refuses: a dial would fail with another error.
			code := run([]string{"--server", "http://127.0.0.1:1", "--transport", transport, "web", "80", spec}, &stdout, &stderr, nil)
			if want := "error: remote port cannot be empty\n"; code != 1 || stderr.String() != want || stdout.Len() != 0 {
				t.Errorf("--transport %s web 80 %q: exit %d, stdout %q, stderr %q; want exit 1, stderr %q", transport, spec, code, stdout.String(), stderr.String(), want)
			}
		}
	}
}
