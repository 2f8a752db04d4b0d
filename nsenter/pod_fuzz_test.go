package nsenter

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzPodValidate checks Pod.Validate against Kubernetes' own name rules
// (apimachinery's IsDNS1123Label for namespaces, IsDNS1123Subdomain for
// pod names): it never accepts a name Kubernetes refuses, and refuses a
// valid one only for a dot-separated part over 63 bytes, which Validate
// refuses on purpose (TestPodValidate). A pod it accepts resolves to a
// file directly in the resolver's directory whose name maps back to the
// pod alone (no '_', '/' or ".." can get in); a refusal wraps
// ErrInvalidPod.
func FuzzPodValidate(f *testing.F) {
	f.Add("default", "web-0", "")
	f.Add("kube-system", "coredns-5d78c9869d-abcde", "3f1b3c55-64b2-4b9a-9c1e-6f0f2f6d8b11")
	f.Add("a", "b.c.d", "0B5E1C9A")
	f.Add("default", "..", "")
	f.Add("a_b", "c", "")
	f.Add("default", "web.", "")
	f.Add("default", strings.Repeat("a", 64), "")
	f.Add("default", "web", "../x")
	f.Fuzz(func(t *testing.T, namespace, name, uid string) {
		pod := Pod{Namespace: namespace, Name: name, UID: uid}
		err := pod.Validate()
		k8sOK := len(validation.IsDNS1123Label(namespace)) == 0 && len(validation.IsDNS1123Subdomain(name)) == 0
		if err != nil {
			if !errors.Is(err, ErrInvalidPod) {
				t.Fatalf("%+v: %v does not wrap ErrInvalidPod", pod, err)
			}
			longPart := false
			for part := range strings.SplitSeq(name, ".") {
				longPart = longPart || len(part) > 63
			}
			uidOK := len(uid) <= 128 && strings.Trim(uid, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") == ""
			if k8sOK && uidOK && !longPart {
				t.Fatalf("%+v: %v, but Kubernetes accepts the names", pod, err)
			}
			return
		}
		if !k8sOK {
			t.Fatalf("%+v accepted; Kubernetes refuses it: %q %q", pod, validation.IsDNS1123Label(namespace), validation.IsDNS1123Subdomain(name))
		}
		const dir = "/run/netns"
		file := DirResolver{Dir: dir}.Path(pod)
		ns, n, ok := strings.Cut(filepath.Base(file), "_")
		if filepath.Dir(file) != dir || !ok || ns != namespace || n != name {
			t.Fatalf("%+v accepted; resolves to %q", pod, file)
		}
		if s := pod.String(); s != namespace+"/"+name || strings.Count(s, "/") != 1 {
			t.Fatalf("%+v: String() = %q", pod, s)
		}
	})
}
