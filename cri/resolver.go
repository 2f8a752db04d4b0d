package cri

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/portforwardd/portforwardd/nsenter"
)

// Labels the kubelet puts on every sandbox.
const (
	LabelPodNamespace = "io.kubernetes.pod.namespace"
	LabelPodName      = "io.kubernetes.pod.name"
	LabelPodUID       = "io.kubernetes.pod.uid"
)

// ResolverCacheTTL is how long a pod's sandbox lookup is reused. Every use
// re-checks that the namespace file still holds the same network
// namespace, so a stopped sandbox is noticed at once and looked up again.
// Host-network sandboxes, whose namespace (the node's) outlives them, are
// not cached, nor are those found by their process (/proc/<pid>/ns/net),
// whose PID another process may have once they end.
const ResolverCacheTTL = 10 * time.Second

// ResolveTimeout bounds one lookup (its ListPodSandbox and
// PodSandboxStatus calls), as the kubelet's --runtime-request-timeout
// (default 2m) bounds its CRI calls: a runtime that hangs must not hold
// the request, its --max-sessions slot and the daemon's drain for good.
const ResolveTimeout = 2 * time.Minute

// Resolver resolves pods through a CRI runtime: the newest ready sandbox
// whose kubelet labels match (the UID too, when the route has one), and
// its network namespace from PodSandboxStatus(verbose).
type Resolver struct {
	client  runtimeapi.RuntimeServiceClient
	ttl     time.Duration
	timeout time.Duration // of one lookup

	mu    sync.Mutex
	cache map[nsenter.Pod]resolved
}

type resolved struct {
	target nsenter.Target
	at     time.Time
}

var _ nsenter.Resolver = (*Resolver)(nil)

// NewResolver returns a Resolver that asks the runtime behind conn.
func NewResolver(conn *grpc.ClientConn) *Resolver {
	return &Resolver{client: runtimeapi.NewRuntimeServiceClient(conn), ttl: ResolverCacheTTL, timeout: ResolveTimeout,
		cache: map[nsenter.Pod]resolved{}}
}

// Resolve implements nsenter.Resolver.
func (r *Resolver) Resolve(ctx context.Context, pod nsenter.Pod) (nsenter.Target, error) {
	if err := pod.Validate(); err != nil {
		return nsenter.Target{}, err
	}
	r.mu.Lock()
	c, ok := r.cache[pod]
	r.mu.Unlock()
	if ok && time.Since(c.at) < r.ttl && nsenter.CheckTarget(c.target) == nil {
		return c.target, nil
	}
	t, err := r.lookup(ctx, pod)
	r.mu.Lock()
	// A sandbox found by its process (/proc/<pid>/ns/net) is asked for
	// again each time: once it has ended, its PID may be another
	// process's, whose namespace the path would then name.
	if err == nil && t.Path != HostNetns && !strings.HasPrefix(t.Path, "/proc/") {
		r.cache[pod] = resolved{target: t, at: time.Now()}
	} else {
		delete(r.cache, pod)
	}
	// Entries of pods nobody asks for again expire here rather than pile up.
	for k, v := range r.cache {
		if time.Since(v.at) >= r.ttl {
			delete(r.cache, k)
		}
	}
	r.mu.Unlock()
	return t, err
}

func (r *Resolver) lookup(ctx context.Context, pod nsenter.Pod) (nsenter.Target, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	sel := map[string]string{LabelPodNamespace: pod.Namespace, LabelPodName: pod.Name}
	if pod.UID != "" {
		sel[LabelPodUID] = pod.UID
	}
	list, err := r.client.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
		LabelSelector: sel,
	}})
	if err != nil {
		return nsenter.Target{}, fmt.Errorf("cri ListPodSandbox for %s: %w", pod, err)
	}
	var newest *runtimeapi.PodSandbox
	for _, sb := range list.GetItems() {
		if sb.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
			continue // a runtime that ignores the state filter
		}
		if newest == nil || sb.GetCreatedAt() > newest.GetCreatedAt() {
			newest = sb
		}
	}
	if newest == nil {
		return nsenter.Target{}, fmt.Errorf("%w: no ready sandbox labelled %s", nsenter.ErrPodNotFound, pod)
	}
	st, err := r.client.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: newest.GetId(), Verbose: true})
	if status.Code(err) == codes.NotFound {
		return nsenter.Target{}, fmt.Errorf("%w: sandbox %s of %s is gone", nsenter.ErrPodNotFound, newest.GetId(), pod)
	}
	if err != nil {
		return nsenter.Target{}, fmt.Errorf("cri PodSandboxStatus %s: %w", newest.GetId(), err)
	}
	t, err := targetOf(newest.GetId(), st)
	if se := (*sandboxError)(nil); errors.As(err, &se) && se.gone {
		return nsenter.Target{}, fmt.Errorf("%w: %s", nsenter.ErrPodNotFound, se.msg)
	}
	if err != nil {
		// The daemon's failure (out of file descriptors, info it cannot
		// read), not a missing pod: the server answers 500 with its cause.
		return nsenter.Target{}, fmt.Errorf("%s: %w", pod, err)
	}
	return t, nil
}
