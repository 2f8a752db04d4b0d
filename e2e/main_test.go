package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// daemonBin and cliBin are the binaries built for this run.
var daemonBin, cliBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if reason := missingPrerequisite(); reason != "" {
		if os.Getenv("PORTFORWARDD_REQUIRE_ROOT") == "1" {
			fmt.Fprintf(os.Stderr, "e2e: %s, and PORTFORWARDD_REQUIRE_ROOT=1\n", reason)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: skipping: %s\n", reason)
		return m.Run() // every test skips through requireE2E
	}
	dir, err := os.MkdirTemp("", "portforwardd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	daemonBin = filepath.Join(dir, "portforwardd")
	args := []string{"build", "-o", daemonBin}
	if os.Getenv("PORTFORWARDD_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	args = append(args, "github.com/portforwardd/portforwardd/cmd/portforwardd")
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go %v: %v\n", args, err)
		return 1
	}
	cliBin = filepath.Join(dir, "portforward")
	if out, err := exec.Command("go", "build", "-o", cliBin, "github.com/portforwardd/portforwardd/cmd/portforward").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build portforward: %v\n%s", err, out)
		return 1
	}
	installErrorCapture()
	return m.Run()
}

func missingPrerequisite() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "no ip(8) command (install iproute2)"
	}
	return ""
}

func requireE2E(t *testing.T) {
	t.Helper()
	if daemonBin == "" {
		t.Skip("e2e prerequisites missing (root, iproute2)")
	}
}
