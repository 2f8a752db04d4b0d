package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReusePortListeners: with --reuse-port a second daemon listens on
// the first's port; without it, on the first's side, the second is
// refused with what to change.
func TestReusePortListeners(t *testing.T) {
	first, err := listen("--listen", "127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	addr := first.Addr().String()
	second, err := listen("--listen", addr, true)
	if err != nil {
		t.Fatalf("a second listener with SO_REUSEPORT on %s: %v", addr, err)
	}
	second.Close()

	plain, err := listen("--listen", "127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	_, err = listen("--listen", plain.Addr().String(), true)
	if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), "must have set SO_REUSEPORT too") {
		t.Fatalf("--reuse-port beside a listener without it: %v; want address already in use, saying both must set it", err)
	}
	if _, err = listen("--listen", plain.Addr().String(), false); err == nil || strings.Contains(err.Error(), "SO_REUSEPORT") {
		t.Fatalf("a port in use without --reuse-port: %v; want address already in use, without a word of SO_REUSEPORT", err)
	}
}

// TestMigrateReq reads net.ipv4.tcp_migrate_req's file.
func TestMigrateReq(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content string // "" for no file
		ok      bool
		why     string
	}{
		{"1\n", true, ""},
		{"0\n", false, "net.ipv4.tcp_migrate_req is 0"},
		{"", false, "before Linux 5.14"},
	} {
		file := filepath.Join(dir, "missing")
		if tc.content != "" {
			file = filepath.Join(dir, "tcp_migrate_req")
			if err := os.WriteFile(file, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		ok, why := migrateReq(file)
		if ok != tc.ok || !strings.Contains(why, tc.why) {
			t.Errorf("file %q: %v, %q; want %v, %q", tc.content, ok, why, tc.ok, tc.why)
		}
	}
}
