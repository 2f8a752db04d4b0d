package nsenter

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolveNetnsDir(t *testing.T) {
	name, _ := newNetns(t)
	ns, pod, _ := strings.Cut(name, "_")
	r := DirResolver{}
	target, err := r.Resolve(context.Background(), Pod{Namespace: ns, Name: pod})
	if err != nil {
		t.Fatalf("Resolve(%s/%s): %v", ns, pod, err)
	}
	if want := filepath.Join(DefaultNetnsDir, name); target.Path != want {
		t.Fatalf("Resolve: got path %q, want %q", target.Path, want)
	}

	_, err = r.Resolve(context.Background(), Pod{Namespace: ns, Name: "missing"})
	if !errors.Is(err, ErrPodNotFound) {
		t.Fatalf("Resolve(missing): got %v, want ErrPodNotFound", err)
	}
	_, err = r.Resolve(context.Background(), Pod{Namespace: "a_b", Name: "c"})
	if !errors.Is(err, ErrInvalidPod) {
		t.Fatalf("Resolve(a_b/c): got %v, want ErrInvalidPod", err)
	}
}

func TestResolveRejectsFilesThatAreNotNetns(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "default_plain"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := DirResolver{Dir: dir}
	_, err := r.Resolve(context.Background(), Pod{Namespace: "default", Name: "plain"})
	if !errors.Is(err, ErrNotNetns) {
		t.Fatalf("Resolve(regular file): got %v, want ErrNotNetns", err)
	}
	// An nsfs file of another namespace type is not a network namespace.
	if _, err := Identify("/proc/self/ns/uts"); !errors.Is(err, ErrNotNetns) {
		t.Fatalf("Identify(uts namespace): got %v, want ErrNotNetns", err)
	}
	if _, err := Identify("/proc/self/ns/net"); err != nil {
		t.Fatalf("Identify(own netns): %v", err)
	}
}
