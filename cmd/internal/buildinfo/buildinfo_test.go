package buildinfo

import "testing"

func TestVersion(t *testing.T) {
	if got := Version("v1.2.3"); got != "v1.2.3" {
		t.Errorf("Version(%q) = %q, want the stamped version", "v1.2.3", got)
	}
	// A test binary is built from the working tree: no module version.
	if got := Version(""); got != "dev" {
		t.Errorf("Version(\"\") = %q, want dev", got)
	}
}
