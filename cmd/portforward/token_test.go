package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTokenFileFlags: --token-file refuses, in one line and before the
// server is asked, a file that cannot be read or holds no token, and
// --token beside it.
func TestTokenFileFlags(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A server nothing listens on: any attempt to reach it would fail
	// with another error than the flags'.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--token-file", filepath.Join(dir, "missing")}, "error: --token-file " + filepath.Join(dir, "missing") + ": "},
		{[]string{"--token-file", empty}, "error: --token-file " + empty + ": no token in it"},
		{[]string{"--token-file", good, "--token", "tok"}, "error: --token and --token-file: give one"},
	} {
		var stdout, stderr bytes.Buffer
		args := append(append([]string{"--server", "http://127.0.0.1:1", "--address", "127.0.0.1"}, tc.args...), "pod", ":80")
		code := run(args, &stdout, &stderr, make(chan struct{}))
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 1 and one line %q…", tc.args, code, stderr.String(), tc.want)
		}
	}
}

// TestTokenFileReadAgainWhenItChanges: the token is read again once the
// file changes, by rename (a projected volume's rotation) or in place, and
// kept when the file cannot be read for a moment.
func TestTokenFileReadAgainWhenItChanges(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	write := func(tok string) {
		tmp := filepath.Join(dir, "tmp")
		if err := os.WriteFile(tmp, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("first")
	tf, err := newTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	get := func(want string) {
		t.Helper()
		if got, err := tf.get(); got != want || err != nil {
			t.Fatalf("token %q, %v; want %q", got, err, want)
		}
	}
	get("first")
	write("secnd") // same size, perhaps the same mtime: another file
	get("secnd")
	if err := os.WriteFile(path, []byte("third, in place"), 0o600); err != nil {
		t.Fatal(err)
	}
	get("third, in place")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	get("third, in place")
	// In place, same size: told apart by the modification time.
	if err := os.WriteFile(path, []byte("fourth"), 0o600); err != nil {
		t.Fatal(err)
	}
	get("fourth")
	later := time.Now().Add(time.Minute)
	if err := os.WriteFile(path, []byte("fifth!"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	get("fifth!")
}
