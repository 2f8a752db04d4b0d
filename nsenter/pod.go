package nsenter

import (
	"context"
	"fmt"
)

// Pod names a pod the way the kubelet's routes do.
type Pod struct {
	Namespace string
	Name      string
	UID       string // optional; empty when the route has none
}

// String returns "namespace/name", the form used in logs and error texts,
// or the name alone when there is no namespace (a CRI sandbox ID, which
// is how the kubelet's streaming library names the pod in its texts).
func (p Pod) String() string {
	if p.Namespace == "" {
		return p.Name
	}
	return p.Namespace + "/" + p.Name
}

// Validate reports whether p can name a Kubernetes pod: the namespace is a
// DNS-1123 label and the name a DNS-1123 subdomain. This also guarantees that
// neither contains '/', '_' or "..", which keeps resolvers' paths inside their
// directory.
func (p Pod) Validate() error {
	if !isDNS1123Label(p.Namespace) {
		return fmt.Errorf("%w: namespace %q is not a DNS-1123 label", ErrInvalidPod, clip(p.Namespace))
	}
	if !isDNS1123Subdomain(p.Name) {
		return fmt.Errorf("%w: pod name %q is not a DNS-1123 subdomain", ErrInvalidPod, clip(p.Name))
	}
	if len(p.UID) > 128 || !isUIDChars(p.UID) {
		return fmt.Errorf("%w: uid %q is not a UID", ErrInvalidPod, clip(p.UID))
	}
	return nil
}

// clipLen bounds how much of an invalid value an error repeats.
const clipLen = 64

// clip shortens s for an error text: whatever a client sends, the answer
// stays short.
func clip(s string) string {
	if len(s) <= clipLen {
		return s
	}
	return s[:clipLen] + "..."
}

// Target is a network namespace to dial into.
type Target struct {
	// Path is the namespace file, an nsfs mount.
	Path string
	// ID is the namespace Path named when the Target was made (Identify).
	// Dial refuses another namespace found at Path then, as a namespace
	// that is gone: a pod deleted and created again under the same name,
	// or a process that took the PID of a /proc/<pid>/ns/net, is not the
	// pod a session was opened for. The zero ID dials whatever Path names.
	ID NetnsID
}

// NetnsID identifies a network namespace: its nsfs inode number, and the
// kernel's namespace ID (NS_GET_ID, Linux 6.18), zero where the kernel
// has none. Inode numbers are reused once a namespace is freed; namespace
// IDs are not.
type NetnsID struct{ Inode, Kernel uint64 }

// same reports whether id and o identify the same namespace, as far as
// both tell.
func (id NetnsID) same(o NetnsID) bool {
	return id.Inode == o.Inode && (id.Kernel == 0 || o.Kernel == 0 || id.Kernel == o.Kernel)
}

// Resolver maps a pod to the network namespace it runs in.
type Resolver interface {
	// Resolve returns the pod's Target, an error wrapping ErrPodNotFound when
	// there is no such pod, or ErrNotNetns when its file is not usable.
	Resolve(ctx context.Context, pod Pod) (Target, error)
}

func isDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

func isDNS1123Subdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if !isDNS1123Label(s[start:i]) {
				return false
			}
			start = i + 1
		}
	}
	return true
}

// isUIDChars accepts what Kubernetes UIDs (RFC 4122 text) are made of.
func isUIDChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
