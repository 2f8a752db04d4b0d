package nsenter

import (
	"context"
	"fmt"
	"path/filepath"
)

// DefaultNetnsDir is where `ip netns add` pins network namespaces.
const DefaultNetnsDir = "/run/netns"

// maxFileName is Linux's NAME_MAX, the longest file name.
const maxFileName = 255

// DirResolver resolves pod {namespace}/{name} to the namespace file
// <Dir>/<namespace>_<name>. Kubernetes names cannot contain '_', so the file
// name is unambiguous. The pod's UID is not checked.
type DirResolver struct {
	// Dir is the directory of namespace files; empty means DefaultNetnsDir.
	Dir string
}

var _ Resolver = DirResolver{}

func (r DirResolver) dir() string {
	if r.Dir == "" {
		return DefaultNetnsDir
	}
	return r.Dir
}

// Path returns the namespace file name for pod without checking it.
func (r DirResolver) Path(pod Pod) string {
	return filepath.Join(r.dir(), pod.Namespace+"_"+pod.Name)
}

// Resolve checks that the pod's file exists and is a network namespace,
// and returns a Target bound to that namespace: a pod created again under
// the same name is another Target.
func (r DirResolver) Resolve(_ context.Context, pod Pod) (Target, error) {
	if err := pod.Validate(); err != nil {
		return Target{}, err
	}
	path := r.Path(pod)
	if len(filepath.Base(path)) > maxFileName {
		// A pod name may take 253 bytes, a file name 255: such a pod has
		// no file here (ip netns add refuses the name), and open(2) would
		// fail with ENAMETOOLONG rather than ENOENT.
		return Target{}, fmt.Errorf("%w: %s is too long for a network namespace file name", ErrPodNotFound, pod)
	}
	t, err := Identify(path)
	if err != nil {
		if isNotExist(err) {
			return Target{}, fmt.Errorf("%w: no network namespace %s", ErrPodNotFound, path)
		}
		return Target{}, err
	}
	return t, nil
}
