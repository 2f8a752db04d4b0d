package cri

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/portforwardd/portforwardd/nsenter"
)

// hungRuntime is a runtime that never answers ListPodSandbox, as a CRI-O
// or containerd stuck on a lock does; it says when a call has come.
type hungRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	called chan struct{}
}

func (h *hungRuntime) ListPodSandbox(ctx context.Context, _ *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	h.called <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestResolverGivesUpOnAHungRuntime: a lookup the runtime never answers
// fails after the resolver's timeout, even when the caller's context never
// ends (a request whose client waits, or whose body is still to come).
// Each such request held its --max-sessions slot, and the daemon's drain,
// for as long as the runtime hung.
func TestResolverGivesUpOnAHungRuntime(t *testing.T) {
	rt := &hungRuntime{called: make(chan struct{}, 1)}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, rt)
	sock := filepath.Join(t.TempDir(), "runtime.sock")
	serveUnix(t, srv, sock)
	conn, err := Dial("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := NewResolver(conn)
	if r.timeout != ResolveTimeout {
		t.Fatalf("resolver timeout %v, want ResolveTimeout %v", r.timeout, ResolveTimeout)
	}
	r.timeout = 200 * time.Millisecond

	done := make(chan error, 1)
	go func() {
		_, err := r.Resolve(context.Background(), nsenter.Pod{Namespace: "ns", Name: "pod"})
		done <- err
	}()
	<-rt.called
	select {
	case err := <-done:
		if status.Code(err) != codes.DeadlineExceeded || errors.Is(err, nsenter.ErrPodNotFound) {
			t.Fatalf("Resolve: %v, want DeadlineExceeded (a hung runtime is no unknown pod)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Resolve still waiting for the hung runtime after 10 s")
	}
}
