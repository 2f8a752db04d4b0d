package nsenter

import "errors"

var (
	// ErrPodNotFound means the resolver has no network namespace for the pod.
	ErrPodNotFound = errors.New("pod not found")
	// ErrInvalidPod means the pod reference cannot name a Kubernetes pod.
	ErrInvalidPod = errors.New("invalid pod reference")
	// ErrNotNetns means a path exists but is not a network namespace: an
	// unmounted leftover file, another namespace type, or a regular file.
	ErrNotNetns = errors.New("not a network namespace")
	// ErrNetnsGone means the namespace a Target was bound to is no longer
	// at its path: the file disappeared (the pod went away) between
	// resolving and dialing, or it now holds another namespace (a pod
	// created again under the same name, a PID taken by another process).
	ErrNetnsGone = errors.New("network namespace is gone")
)
