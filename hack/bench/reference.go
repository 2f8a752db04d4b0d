package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"k8s.io/cri-streaming/pkg/streaming/portforward"

	"github.com/portforwardd/portforwardd/nsenter"
)

// serveReference runs the reference stack: the kubelet's port-forward
// handler library (k8s.io/cri-streaming, the one CRI-O and containerd
// vendor, on spdystream) with containerd's forwarding loop, serving the
// same routes as portforwardd. It never returns.
func serveReference(listen, netnsDir string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String()) // the parent reads the address
	resolver := nsenter.DirResolver{Dir: netnsDir}
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pod, ok := podFromPath(r.URL.Path)
		if !ok {
			http.NotFound(w, r)
			return
		}
		target, err := resolver.Resolve(r.Context(), pod)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		portforward.ServePortForward(w, r, containerdForwarder{target}, pod.String(), "", nil,
			4*time.Hour, 30*time.Second, []string{"portforward.k8s.io"})
	}))
}

func podFromPath(p string) (nsenter.Pod, bool) {
	parts := strings.Split(strings.TrimPrefix(p, "/portForward/"), "/")
	if len(parts) < 2 || !strings.HasPrefix(p, "/portForward/") {
		return nsenter.Pod{}, false
	}
	return nsenter.Pod{Namespace: parts[0], Name: parts[1]}, true
}

// containerdForwarder is containerd's portForward
// (internal/cri/server/sandbox_portforward_linux.go): dial in the pod's
// netns, copy both ways, and when the first direction ends wait at most a
// second for the other, then close everything. No half-close.
type containerdForwarder struct{ target nsenter.Target }

func (f containerdForwarder) PortForward(ctx context.Context, _ string, _ string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	conn, err := nsenter.Dialer{}.Dial(ctx, f.target, uint16(port))
	if err != nil {
		return err
	}
	defer conn.Close()
	errCh := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, stream)
		errCh <- err
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		errCh <- err
	}()
	select {
	case err := <-errCh:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-errCh:
		return err
	case <-time.After(time.Second):
		return nil
	}
}
