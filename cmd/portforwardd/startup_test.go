package main

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// hostsChildEnv names the hosts file a child run of this test binary
// mounts over /etc/hosts, in its own mount namespace, before it serves.
const hostsChildEnv = "PORTFORWARDD_TEST_HOSTS"

func TestMain(m *testing.M) {
	if hosts := os.Getenv(hostsChildEnv); hosts != "" {
		os.Exit(serveWithHosts(hosts, os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// serveWithHosts is the child: /etc/hosts is replaced (in this process's
// mount namespace only), then the daemon starts with --listen addr and
// whatever it ends with is printed. 0 means it served.
func serveWithHosts(hosts, addr string) int {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		println("make / private:", err.Error())
		return 3
	}
	if err := syscall.Mount(hosts, "/etc/hosts", "", syscall.MS_BIND, ""); err != nil {
		println("mount hosts:", err.Error())
		return 3
	}
	dir, err := os.MkdirTemp("", "netns")
	if err != nil {
		println(err.Error())
		return 3
	}
	defer os.RemoveAll(dir)
	o, err := parseFlags([]string{"--listen=" + addr, "--metrics-listen=", "--netns-dir=" + dir}, io.Discard)
	if err != nil {
		println("flags:", err.Error())
		return 3
	}
	sigc := make(chan os.Signal, 1)
	sigc <- syscall.SIGTERM // serve stops at once if it gets to serve
	if err := serve(o, slog.New(slog.NewTextHandler(io.Discard, nil)), sigc); err != nil {
		println(err.Error())
		return 1
	}
	return 0
}

// TestLocalhostMustBindLoopback: --listen localhost:PORT passes the flag
// checks as loopback (no TLS, no authentication needed), but "localhost"
// is looked up like any name. A hosts file that maps it to 0.0.0.0 must
// not turn that into an unauthenticated listener on every interface.
func TestLocalhostMustBindLoopback(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("PORTFORWARDD_REQUIRE_ROOT") == "1" {
			t.Fatal("needs root (a mount namespace)")
		}
		t.Skip("needs root (a mount namespace)")
	}
	for _, tc := range []struct {
		hosts string
		serve bool
	}{
		{"0.0.0.0 localhost\n", false},
		{"127.0.0.1 localhost\n", true},
	} {
		hosts := filepath.Join(t.TempDir(), "hosts")
		if err := os.WriteFile(hosts, []byte(tc.hosts), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$", "localhost:0")
		cmd.Env = append(os.Environ(), hostsChildEnv+"="+hosts)
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		out, err := cmd.CombinedOutput()
		code := cmd.ProcessState.ExitCode()
		switch {
		case code == 3:
			t.Fatalf("hosts %q: the child could not start: %s", tc.hosts, out)
		case tc.serve && err != nil:
			t.Errorf("hosts %q: localhost maps to loopback, yet the daemon did not serve: %v: %s", tc.hosts, err, out)
		case !tc.serve && err == nil:
			t.Errorf("hosts %q: the daemon served --listen localhost:0 on every interface, unauthenticated", tc.hosts)
		case !tc.serve && !strings.Contains(string(out), "--listen localhost:0 is bound to 0.0.0.0:") && !strings.Contains(string(out), "is bound to [::]:"):
			t.Errorf("hosts %q: the refusal does not say where it was bound: %s", tc.hosts, out)
		}
	}
}

// TestStartUpProblemsNameTheirFlag: a --netns-dir that is a file is said
// to be one (not "not there yet"), and TLS files that cannot be read name
// the flags that gave them.
func TestStartUpProblemsNameTheirFlag(t *testing.T) {
	file := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags([]string{"--listen=127.0.0.1:0", "--metrics-listen=", "--netns-dir=" + file}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sigc := make(chan os.Signal, 1)
	sigc <- syscall.SIGTERM
	if err := serve(o, slog.New(slog.NewTextHandler(&log, nil)), sigc); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "--netns-dir is not a directory") {
		t.Errorf("a --netns-dir that is a file is not said to be one:\n%s", log.String())
	}

	missing := filepath.Join(t.TempDir(), "missing.crt")
	o, err = parseFlags([]string{"--listen=127.0.0.1:0", "--metrics-listen=", "--tls-cert-file=" + missing, "--tls-private-key-file=" + missing}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = serve(o, slog.New(slog.NewTextHandler(io.Discard, nil)), make(chan os.Signal))
	if err == nil || !strings.Contains(err.Error(), "--tls-cert-file") || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing TLS files: %v, want the flag and the path named", err)
	}
}
