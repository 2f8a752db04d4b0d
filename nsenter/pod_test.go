package nsenter

import (
	"context"
	"errors"
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
		{"name too long", Pod{Namespace: "a", Name: strings.Repeat("a.", 127) + "a"}, false},
		{"name label too long", Pod{Namespace: "a", Name: strings.Repeat("a", 64)}, false},
		{"nul byte", Pod{Namespace: "a", Name: "b\x00c"}, false},
		{"uid with slash", Pod{Namespace: "a", Name: "b", UID: "../x"}, false},
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
