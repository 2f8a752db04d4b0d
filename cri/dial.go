package cri

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// Reconnection backoff of the runtime connection, as the kubelet's own CRI
// client has it (k8s.io/cri-client remote_runtime.go): a runtime that
// restarts is used again within seconds of serving, not after gRPC's
// default backoff of up to 120 s, during which every call through the
// proxy fails Unavailable and the node's runtime looks down.
const (
	dialBaseBackoff       = 100 * time.Millisecond
	dialMaxBackoff        = 3 * time.Second
	dialMinConnectTimeout = 5 * time.Second
)

// Dial connects to a CRI endpoint given as unix:///path (or a bare
// absolute path), with MaxMessageSize both ways. The connection is lazy:
// errors show up on the first call. It reconnects as the kubelet's CRI
// client does (see dialMaxBackoff).
func Dial(endpoint string) (*grpc.ClientConn, error) {
	target := endpoint
	if strings.HasPrefix(endpoint, "/") {
		target = "unix://" + endpoint
	}
	if !strings.HasPrefix(target, "unix://") {
		return nil, fmt.Errorf("cri endpoint %q: only unix:// endpoints are supported", endpoint)
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  dialBaseBackoff,
				Multiplier: backoff.DefaultConfig.Multiplier,
				Jitter:     backoff.DefaultConfig.Jitter,
				MaxDelay:   dialMaxBackoff,
			},
			MinConnectTimeout: dialMinConnectTimeout,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("cri endpoint %q: %w", endpoint, err)
	}
	return conn, nil
}

// SocketPath returns the file of a unix:// endpoint.
func SocketPath(endpoint string) (string, error) {
	if p, ok := strings.CutPrefix(endpoint, "unix://"); ok && strings.HasPrefix(p, "/") {
		return p, nil
	}
	if strings.HasPrefix(endpoint, "/") {
		return endpoint, nil
	}
	return "", fmt.Errorf("cri endpoint %q: want unix:///absolute/path", endpoint)
}
