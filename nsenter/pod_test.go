package nsenter

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestPodValidate(t *testing.T) {
	tests := []struct {
		name string
		pod  Pod
		ok   bool
	}{
		{"simple", Pod{Namespace: "default", Name: "web-0"}, true},
		{"dotted name", Pod{Namespace: "kube-system", Name: "coredns.abc-1"}, true},
		{"with uid", Pod{Namespace: "a", Name: "b", UID: "0b5e1c9a-8f3e-4d2b-9c1a-1234567890ab"}, true},
		{"empty namespace", Pod{Name: "x"}, false},
		{"empty name", Pod{Namespace: "x"}, false},
		{"underscore", Pod{Namespace: "a_b", Name: "c"}, false},
		{"dot dot", Pod{Namespace: "default", Name: ".."}, false},
		{"slash", Pod{Namespace: "default", Name: "a/b"}, false},
		{"upper case", Pod{Namespace: "Default", Name: "web"}, false},
		{"leading dash", Pod{Namespace: "-a", Name: "web"}, false},
		{"trailing dash", Pod{Namespace: "a", Name: "web-"}, false},
		{"namespace too long", Pod{Namespace: strings.Repeat("a", 64), Name: "web"}, false},
		{"dotted namespace", Pod{Namespace: "kube.system", Name: "web"}, false}, // a label, not a subdomain
		{"name of 253 bytes", Pod{Namespace: "a", Name: strings.Repeat("a.", 126) + "a"}, true},
		{"name of 254 bytes", Pod{Namespace: "a", Name: strings.Repeat("a.", 126) + "ab"}, false},
		{"name too long", Pod{Namespace: "a", Name: strings.Repeat("a.", 127) + "a"}, false},
		{"name label too long", Pod{Namespace: "a", Name: strings.Repeat("a", 64)}, false},
		{"nul byte", Pod{Namespace: "a", Name: "b\x00c"}, false},
		{"uid with slash", Pod{Namespace: "a", Name: "b", UID: "../x"}, false},
		{"uid of 128 bytes", Pod{Namespace: "a", Name: "b", UID: strings.Repeat("a", 128)}, true},
		{"uid of 129 bytes", Pod{Namespace: "a", Name: "b", UID: strings.Repeat("a", 129)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.pod.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate(%+v): got err %v, want ok=%v", tt.pod, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidPod) {
				t.Fatalf("Validate(%+v): got %v, want an ErrInvalidPod", tt.pod, err)
			}
		})
	}
}

func TestDirResolverPath(t *testing.T) {
	r := DirResolver{Dir: "/x/netns"}
	if got, want := r.Path(Pod{Namespace: "ns", Name: "pod"}), "/x/netns/ns_pod"; got != want {
		t.Fatalf("Path: got %q, want %q", got, want)
	}
	if got, want := (DirResolver{}).Path(Pod{Namespace: "ns", Name: "pod"}), "/run/netns/ns_pod"; got != want {
		t.Fatalf("default Path: got %q, want %q", got, want)
	}
}

// TestResolveNameTooLongForAFile: a valid pod whose <namespace>_<name> is
// longer than a file name may be (255 bytes) cannot have a namespace file,
// so it is not found, as any other pod without one.
func TestResolveNameTooLongForAFile(t *testing.T) {
	pod := Pod{Namespace: "default", Name: strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)}
	if err := pod.Validate(); err != nil {
		t.Fatalf("Validate(%d-byte name): %v", len(pod.Name), err)
	}
	_, err := DirResolver{Dir: t.TempDir()}.Resolve(context.Background(), pod)
	if !errors.Is(err, ErrPodNotFound) {
		t.Fatalf("Resolve(%d-byte name): got %v, want ErrPodNotFound", len(pod.Name), err)
	}
	if got := Reason(err); got != "not_found" {
		t.Errorf("Reason: got %q, want not_found", got)
	}
}

// TestResolveFileNameOneByteTooLong: a <namespace>_<name> of 256 bytes,
// one more than a file name may hold, is not found, as a longer one is:
// open(2) would fail with ENAMETOOLONG, the daemon's 500, not a 404.
func TestResolveFileNameOneByteTooLong(t *testing.T) {
	name := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 56)
	pod := Pod{Namespace: "default", Name: name}
	if err := pod.Validate(); err != nil {
		t.Fatalf("Validate(%d-byte name): %v", len(name), err)
	}
	r := DirResolver{Dir: t.TempDir()}
	if n := len(filepath.Base(r.Path(pod))); n != maxFileName+1 {
		t.Fatalf("the file name has %d bytes, want %d", n, maxFileName+1)
	}
	_, err := r.Resolve(context.Background(), pod)
	if !errors.Is(err, ErrPodNotFound) {
		t.Fatalf("Resolve(%d-byte file name): got %v, want ErrPodNotFound", maxFileName+1, err)
	}
}

// TestNetnsIDSame: two IDs with one inode number are the same namespace
// only if their kernel namespace IDs agree where both have one: the inode
// number of a freed namespace is reused, its namespace ID never.
func TestNetnsIDSame(t *testing.T) {
	for _, tt := range []struct {
		a, b NetnsID
		same bool
	}{
		{NetnsID{Inode: 7, Kernel: 40}, NetnsID{Inode: 7, Kernel: 40}, true},
		{NetnsID{Inode: 7, Kernel: 40}, NetnsID{Inode: 7, Kernel: 41}, false},
		{NetnsID{Inode: 7, Kernel: 40}, NetnsID{Inode: 8, Kernel: 40}, false},
		{NetnsID{Inode: 7}, NetnsID{Inode: 7, Kernel: 41}, true}, // one kernel without NS_GET_ID: inodes only
		{NetnsID{Inode: 7, Kernel: 40}, NetnsID{Inode: 7}, true},
	} {
		if got := tt.a.same(tt.b); got != tt.same {
			t.Errorf("%+v.same(%+v) = %v, want %v", tt.a, tt.b, got, tt.same)
		}
	}
}
