package cri

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// MaxMessageSize is the message limit of both legs. The kubelet's CRI
// client allows 16 MiB; the proxy must never be the tighter bound.
const MaxMessageSize = 16 << 20

// methodPortForward is the one method the proxy answers itself (when the
// stream server is ready); every other goes to the upstream as it is.
const methodPortForward = "/runtime.v1.RuntimeService/PortForward"

// ProxyConfig configures a Proxy.
type ProxyConfig struct {
	// Upstream is the runtime's CRI connection (see Dial). Required.
	Upstream *grpc.ClientConn
	// Tokens issues the URLs' tokens. Required.
	Tokens *Tokens
	// StreamURL returns the base URL of portforwardd's stream server, for
	// example http://127.0.0.1:10350, and whether it is ready to serve;
	// when it is not, PortForward goes to the upstream unchanged. Required.
	StreamURL func() (base string, ready bool)
	// Metrics receives counts; nil discards them.
	Metrics *Metrics
	// Log receives one line per answered PortForward and per failure.
	Log *slog.Logger
}

// Proxy is the CRI proxy. Serve it with NewServer.
type Proxy struct {
	cfg ProxyConfig
	m   *Metrics
	log *slog.Logger
}

// NewProxy returns a Proxy for cfg.
func NewProxy(cfg ProxyConfig) *Proxy {
	p := &Proxy{cfg: cfg, m: cfg.Metrics, log: cfg.Log}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.m == nil {
		p.m = NewMetrics(nil)
	}
	p.m.tokens.Store(cfg.Tokens)
	return p
}

// NewServer returns a gRPC server that has no services of its own: every
// call reaches the proxy's handler.
func (p *Proxy) NewServer() *grpc.Server {
	return grpc.NewServer(
		grpc.UnknownServiceHandler(p.handle),
		grpc.ForceServerCodec(rawCodec{}),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
	)
}

func (p *Proxy) handle(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "cri proxy: no method in the stream context")
	}
	if method == methodPortForward {
		if base, ready := p.cfg.StreamURL(); ready {
			err := p.portForward(ss, base)
			p.m.calls.WithLabelValues("portforward", status.Code(err).String()).Inc()
			return err
		}
		p.log.Warn("stream server not ready: PortForward goes to the runtime")
		err := p.forward(ss, method)
		p.m.calls.WithLabelValues("portforward_upstream", status.Code(err).String()).Inc()
		return err
	}
	err := p.forward(ss, method)
	p.m.calls.WithLabelValues("passthrough", status.Code(err).String()).Inc()
	return err
}

// outgoing carries the caller's metadata and deadline to the upstream.
// gRPC itself drops the reserved keys (content-type, user-agent, te,
// grpc-*, pseudo-headers) from outgoing metadata.
func outgoing(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, ":") {
			continue
		}
		out[k] = v
	}
	return metadata.NewOutgoingContext(ctx, out)
}

// forward relays one call of any shape to the upstream: client messages
// up until the client half-closes, the upstream's header, messages and
// trailer down, and its status as the call's status.
func (p *Proxy) forward(ss grpc.ServerStream, method string) error {
	ctx, cancel := context.WithCancel(outgoing(ss.Context()))
	defer cancel()
	cs, err := p.cfg.Upstream.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method,
		grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	// Client to upstream. A failed SendMsg means the upstream ended the
	// call, and its status (read below) says why; the goroutine ends at the
	// latest when the handler returns and gRPC ends the server stream.
	go func() {
		for {
			f := new(frame)
			if err := ss.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					cs.CloseSend()
				} else {
					cancel() // the client is gone: end the upstream call
				}
				return
			}
			if cs.SendMsg(f) != nil {
				return
			}
		}
	}()
	// The upstream's header comes before its first message, or with its
	// status: Header waits for it. Passed on as soon as it comes, so a
	// client that waits for the header before it sends is not held up.
	if md, herr := cs.Header(); herr == nil && len(md) > 0 {
		if err := ss.SendHeader(md); err != nil {
			return err
		}
	}
	for {
		f := new(frame)
		err := cs.RecvMsg(f)
		if err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				// The call succeeded; a client that has not half-closed yet
				// is done anyway.
				return nil
			}
			if _, ok := status.FromError(err); ok {
				return err
			}
			return status.Error(codes.Unavailable, err.Error())
		}
		if err := ss.SendMsg(f); err != nil {
			return err
		}
	}
}
