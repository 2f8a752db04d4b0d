package cri

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/portforwardd/portforwardd/nsenter"
)

// portForward answers a PortForward call with a URL of the stream server
// at base. Like containerd (and unlike CRI-O) it checks the sandbox now,
// so a missing or stopped sandbox fails the RPC rather than the stream.
func (p *Proxy) portForward(ss grpc.ServerStream, base string) error {
	in := new(frame)
	if err := ss.RecvMsg(in); err != nil {
		return err
	}
	var req runtimeapi.PortForwardRequest
	if err := proto.Unmarshal(in.payload, &req); err != nil {
		return status.Errorf(codes.InvalidArgument, "decode PortForwardRequest: %v", err)
	}
	id := req.GetPodSandboxId()
	if id == "" {
		return status.Error(codes.InvalidArgument, "PodSandboxId is not set")
	}
	ports := make([]uint16, 0, len(req.GetPort()))
	for _, port := range req.GetPort() {
		if port <= 0 || port > 65535 {
			return status.Errorf(codes.InvalidArgument, "invalid port %d", port)
		}
		ports = append(ports, uint16(port))
	}
	target, err := p.sandboxTarget(ss, id)
	if err != nil {
		p.log.Info("PortForward refused", "sandbox", id, "err", err)
		return err
	}
	token, err := p.cfg.Tokens.Insert(Grant{SandboxID: id, Target: target, Ports: ports})
	if err != nil {
		p.log.Warn("PortForward refused", "sandbox", id, "err", err)
		return err
	}
	url := strings.TrimSuffix(base, "/") + "/portforward/" + token
	out, err := proto.Marshal(&runtimeapi.PortForwardResponse{Url: url})
	if err != nil {
		return status.Errorf(codes.Internal, "encode PortForwardResponse: %v", err)
	}
	p.log.Info("PortForward answered", "sandbox", id, "netns", target.Path)
	return ss.SendMsg(&frame{payload: out})
}

// sandboxTarget asks the upstream for the sandbox's verbose status and
// returns its network namespace, checked to be one now.
func (p *Proxy) sandboxTarget(ss grpc.ServerStream, id string) (nsenter.Target, error) {
	client := runtimeapi.NewRuntimeServiceClient(p.cfg.Upstream)
	st, err := client.PodSandboxStatus(outgoing(ss.Context()), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		if s, ok := status.FromError(err); ok {
			return nsenter.Target{}, status.Errorf(s.Code(), "failed to find sandbox %q: %s", id, s.Message())
		}
		return nsenter.Target{}, status.Errorf(codes.Unavailable, "failed to find sandbox %q: %v", id, err)
	}
	return targetOf(id, st)
}

// sandboxError is why a sandbox cannot be forwarded to. Gone is a sandbox
// that is not running or whose namespace is closed; otherwise the cause
// (a namespace file the daemon cannot open, verbose info it cannot read)
// is kept for errors.Is. Through the proxy it is FailedPrecondition with
// its message.
type sandboxError struct {
	msg  string
	gone bool
	err  error
}

func (e *sandboxError) Error() string { return e.msg }

func (e *sandboxError) Unwrap() error { return e.err }

// GRPCStatus is the status the kubelet sees.
func (e *sandboxError) GRPCStatus() *status.Status {
	return status.New(codes.FailedPrecondition, e.msg)
}

// targetOf turns a verbose sandbox status into a Target, or a
// *sandboxError.
func targetOf(id string, st *runtimeapi.PodSandboxStatusResponse) (nsenter.Target, error) {
	if st.GetStatus().GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		return nsenter.Target{}, &sandboxError{msg: fmt.Sprintf("sandbox container %q is not running", id), gone: true}
	}
	closed := &sandboxError{msg: fmt.Sprintf("network namespace for sandbox %q is closed", id), gone: true}
	path, err := netnsPath(st)
	switch {
	case errors.Is(err, errNetnsClosed):
		return nsenter.Target{}, closed
	case err != nil:
		return nsenter.Target{}, &sandboxError{msg: fmt.Sprintf("sandbox %q: %v", id, err), err: err}
	}
	// The Target is bound to the namespace the path names now: a
	// /proc/<pid>/ns/net whose PID another process takes once the sandbox
	// has ended is not dialed into by the session that outlives it.
	t, err := nsenter.Identify(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nsenter.Target{}, closed
		}
		return nsenter.Target{}, &sandboxError{msg: fmt.Sprintf("sandbox %q: %v", id, err), err: err}
	}
	return t, nil
}
