package main

import (
	"io"
	"net"
	"strings"
	"testing"
)

func TestParseFlagsRefusesUnsafeOrInconsistentSettings(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // substring of the error; "" means accepted
	}{
		{nil, ""},
		{[]string{"--listen", "[::1]:10350"}, ""},
		{[]string{"--listen", "localhost:10350"}, ""},
		{[]string{"--listen", "0.0.0.0:10350"}, "is not a loopback address"},
		{[]string{"--listen", ":10350"}, "is not a loopback address"},
		{[]string{"--listen", "10.0.0.1:10350", "--allow-insecure-listen"}, ""},
		{[]string{"--listen", "0.0.0.0:10350", "--tls-cert-file", "c", "--tls-private-key-file", "k"}, "authenticates nobody"},
		{[]string{"--listen", "0.0.0.0:10350", "--tls-cert-file", "c", "--tls-private-key-file", "k", "--allow-insecure-listen"}, ""},
		{[]string{"--listen", "0.0.0.0:10350", "--tls-cert-file", "c", "--tls-private-key-file", "k", "--client-ca-file", "ca"}, ""},
		{[]string{"--listen", "0.0.0.0:10350", "--tls-cert-file", "c", "--tls-private-key-file", "k", "--auth-kubeconfig", "kc"}, ""},
		{[]string{"--listen", "0.0.0.0:10350", "--auth-kubeconfig", "kc"}, "is not a loopback address"},
		{[]string{"--tls-cert-file", "c", "--tls-private-key-file", "k"}, ""},
		{[]string{"--pprof"}, ""},
		{[]string{"--pprof", "--metrics-listen", "[::1]:10351"}, ""},
		{[]string{"--pprof", "--metrics-listen", ""}, ""},
		{[]string{"--pprof", "--metrics-listen", "0.0.0.0:10351"}, "--pprof serves profiles to anyone"},
		{[]string{"--pprof", "--metrics-listen", "0.0.0.0:10351", "--allow-insecure-listen"}, ""},
		{[]string{"--metrics-listen", "0.0.0.0:10351"}, ""},
		{[]string{"--tls-cert-file", "c"}, "go together"},
		{[]string{"--client-ca-file", "ca"}, "needs --tls-cert-file"},
		{[]string{"--tls-cert-file", "c", "--tls-private-key-file", "k", "--allowed-client-names", "a"}, "need --client-ca-file"},
		{[]string{"--tls-cert-file", "c", "--tls-private-key-file", "k", "--client-ca-file", "ca", "--allowed-client-groups", "g", "--auth-kubeconfig", "kc"}, "without --auth-kubeconfig only"},
		{[]string{"--max-sessions", "0"}, "must be positive"},
		{[]string{"--stream-buffer-bytes", "1Ki"}, "at least 64Ki"},
		{[]string{"--stream-buffer-bytes", "16Mi", "--session-buffer-bytes", "8Mi"}, "at least --stream-buffer-bytes"},
		{[]string{"--session-buffer-bytes", "1Gi"}, "--buffer-bytes must be at least"},
		{[]string{"--buffer-bytes", "lots"}, "want a byte count"},
		{[]string{"--buffer-bytes", "2Ti"}, "at most 1Ti"},
		{[]string{"--max-header-bytes", "100"}, "at least 4Ki"},
		{[]string{"--auth-cache-ttl", "0s"}, "must be positive"},
		// Each bound, on both sides (found by mutation testing: moving any
		// of these by one, or dropping one, survived every test).
		{[]string{"--stream-idle-timeout", "0"}, ""},
		{[]string{"--stream-idle-timeout", "-1s"}, "--stream-idle-timeout must not be negative"},
		{[]string{"--stream-creation-timeout", "0s"}, "--stream-creation-timeout must be positive"},
		{[]string{"--dial-timeout", "0s"}, "--dial-timeout must be positive"},
		{[]string{"--read-header-timeout", "0s"}, "--read-header-timeout must be positive"},
		{[]string{"--drain-timeout", "0s"}, ""},
		{[]string{"--drain-timeout", "-1s"}, "--drain-timeout must not be negative"},
		{[]string{"--cri-token-ttl", "0s"}, "--cri-token-ttl must be positive"},
		{[]string{"--max-streams-per-session", "0"}, "must be positive"},
		{[]string{"--max-pending-streams", "0"}, "must be positive"},
		{[]string{"--stream-buffer-bytes", "64Ki"}, ""},
		{[]string{"--max-header-bytes", "4Ki"}, ""},
		{[]string{"--session-buffer-bytes", "512Mi"}, ""},
		{[]string{"--listen", ""}, "--listen must not be empty"},
		{[]string{"--cri-listen", "unix:///run/pfd/cri.sock", "--cri-upstream", "crio.sock"}, "--cri-upstream"},
		{[]string{"--cri-listen", "unix:///run/pfd/cri.sock", "--cri-endpoint", "fd://runtime"}, "--cri-endpoint"},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

func TestByteSizeFlags(t *testing.T) {
	o, err := parseFlags([]string{"--stream-buffer-bytes", "1Mi", "--session-buffer-bytes", "65536Ki",
		"--buffer-bytes", "1Gi", "--max-header-bytes", "8192"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	l := o.limits
	if l.StreamBufferBytes != 1<<20 || l.SessionBufferBytes != 64<<20 || l.BufferBytes != 1<<30 || l.MaxHeaderBytes != 8192 {
		t.Errorf("limits %+v", l)
	}
	o, err = parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.limits.MaxSessions != 4096 || o.limits.BufferBytes != 512<<20 || o.limits.MaxHeaderBytes != 64<<10 {
		t.Errorf("defaults %+v", o.limits)
	}
}

// TestBadFlagIsOneError: a flag the daemon cannot parse is reported once,
// as one line on stderr, with exit code 2; -h still prints the usage.
func TestBadFlagIsOneError(t *testing.T) {
	for _, args := range [][]string{
		{"--dial-timeout", "x"},
		{"--no-such-flag"},
		{"--max-sessions", "many"},
		{"--buffer-bytes", "lots"},
	} {
		var stdout, stderr strings.Builder
		code := run(args, &stdout, &stderr)
		if code != 2 {
			t.Errorf("%q: exit code %d, want 2", args, code)
		}
		if lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "portforwardd: ") {
			t.Errorf("%q: stderr %q, want one line starting \"portforwardd: \"", args, stderr.String())
		}
	}
	var stdout, stderr strings.Builder
	if code := run([]string{"-h"}, &stdout, &stderr); code != 0 {
		t.Errorf("-h: exit code %d, want 0", code)
	}
	if !strings.Contains(stderr.String(), "-dial-timeout duration") {
		t.Errorf("-h: no usage on stderr: %q", stderr.String())
	}
}

// TestListenAddressNeedsAPort: an address without a port is refused as
// such, not as a non-loopback address.
func TestListenAddressNeedsAPort(t *testing.T) {
	for _, args := range [][]string{
		{"--listen", "127.0.0.1"},
		{"--listen", "127.0.0.1", "--allow-insecure-listen"},
		{"--metrics-listen", "127.0.0.1"},
	} {
		_, err := parseFlags(args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "missing port") || strings.Contains(err.Error(), "loopback") {
			t.Errorf("%q: error %v, want one about the missing port", args, err)
		}
	}
}

// TestBufferFlagsFitHTTP2Windows: the stream and session buffers are also
// HTTP/2 flow-control windows, which end at 2^31-1 bytes; net/http replaces
// a larger one with its 1 MiB default, so the flags refuse them.
func TestBufferFlagsFitHTTP2Windows(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--stream-buffer-bytes", "2147483647", "--session-buffer-bytes", "2147483647", "--buffer-bytes", "4Gi"}, true},
		{[]string{"--session-buffer-bytes", "2Gi", "--buffer-bytes", "4Gi"}, false},
		{[]string{"--session-buffer-bytes", "3Gi", "--buffer-bytes", "4Gi"}, false},
		{[]string{"--stream-buffer-bytes", "2Gi", "--session-buffer-bytes", "2Gi", "--buffer-bytes", "2Gi"}, false},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		if tc.ok && err != nil {
			t.Errorf("%q: %v", tc.args, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "HTTP/2")) {
			t.Errorf("%q: error %v, want one naming the HTTP/2 window limit", tc.args, err)
		}
	}
}

// TestStreamURLChecked: --stream-url is handed to the kubelet as the base
// of every port-forward URL, so one it could not dial is refused at start.
func TestStreamURLChecked(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"https://node1.example:10350", true},
		{"http://127.0.0.1:10350/", true},
		{"https://[fd00::1]:10350/prefix", true},
		{"node1:10350", false},
		{"127.0.0.1:10350", false},
		{"ftp://node1:10350", false},
		{"https://", false},
		{"https://node1:10350/?x=1", false},
		{"https://user@node1:10350", false},
		{"https://node1:10350/#f", false},
		{"http://%zz", false},
	} {
		_, err := parseFlags([]string{"--stream-url", tc.v}, io.Discard)
		if tc.ok && err != nil {
			t.Errorf("%q: %v", tc.v, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "--stream-url")) {
			t.Errorf("%q: error %v, want one naming --stream-url", tc.v, err)
		}
	}
}

// TestStreamBaseURL: without --stream-url, the URLs handed to the kubelet
// are on the forwarding listener: https with TLS, and a wildcard host
// (which the kubelet cannot dial) becomes 127.0.0.1 (found by mutation
// testing: ignoring TLS, and keeping a wildcard host, survived every test,
// e2e included).
func TestStreamBaseURL(t *testing.T) {
	for _, tc := range []struct {
		flag, addr string
		tls        bool
		want       string
	}{
		{"", "127.0.0.1:10350", false, "http://127.0.0.1:10350"},
		{"", "127.0.0.1:10350", true, "https://127.0.0.1:10350"},
		{"", "0.0.0.0:10350", true, "https://127.0.0.1:10350"},
		{"", "[::]:10350", false, "http://127.0.0.1:10350"},
		{"", "[fd00::1]:10350", false, "http://[fd00::1]:10350"},
		{"https://node1.example/pf", "0.0.0.0:10350", false, "https://node1.example/pf"},
	} {
		addr, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := streamBaseURL(tc.flag, addr, tc.tls); got != tc.want {
			t.Errorf("streamBaseURL(%q, %s, tls %v) = %q, want %q", tc.flag, tc.addr, tc.tls, got, tc.want)
		}
	}
}

// TestBoolFlagWithASeparateValueIsRefused: a boolean flag takes its value
// as --flag=false only; "--reuse-port false" ends the flags at "false",
// and every flag after it would be ignored. The one stray argument is
// refused, not taken as the end of the command line (found by mutation
// testing: refusing only a second argument survived every test).
func TestBoolFlagWithASeparateValueIsRefused(t *testing.T) {
	_, err := parseFlags([]string{"--reuse-port", "false", "--listen", "127.0.0.1:1"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `unexpected argument "false"`) {
		t.Errorf("--reuse-port false --listen ...: %v, want unexpected argument \"false\"", err)
	}
	if _, err := parseFlags([]string{"stray"}, io.Discard); err == nil {
		t.Error("one positional argument: accepted, want an error")
	}
}
