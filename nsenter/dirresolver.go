package nsenter

import (
	"context"
	"fmt"
	"path/filepath"
)

// DefaultNetnsDir is where `ip netns add` pins network namespaces.
const DefaultNetnsDir = "/run/netns"

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

// Resolve checks that the pod's file exists and is a network namespace.
func (r DirResolver) Resolve(_ context.Context, pod Pod) (Target, error) {
	if err := pod.Validate(); err != nil {
		return Target{}, err
	}
	path := r.Path(pod)
	if err := CheckNetns(path); err != nil {
		if isNotExist(err) {
			return Target{}, fmt.Errorf("%w: no network namespace %s", ErrPodNotFound, path)
		}
		return Target{}, err
	}
	return Target{Path: path}, nil
}
