package cri

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// upstream is a real gRPC server implementing grpc's interop TestService:
// it echoes metadata into its header and trailer, reports the deadline it
// sees, and serves every call shape.
type upstream struct {
	testpb.UnimplementedTestServiceServer
	canceled chan struct{} // a FullDuplexCall saw its context end
}

func (u *upstream) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	hdr := metadata.Pairs("x-echo-initial", strings.Join(md.Get("x-test-initial"), ","))
	if _, ok := ctx.Deadline(); ok {
		hdr.Set("x-had-deadline", "yes")
	}
	grpc.SetHeader(ctx, hdr)
	grpc.SetTrailer(ctx, metadata.Pairs("x-echo-trailing-bin", strings.Join(md.Get("x-test-trailing-bin"), ",")))
	if s := req.GetResponseStatus(); s != nil && s.GetCode() != 0 {
		return nil, status.Error(codes.Code(s.GetCode()), s.GetMessage())
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: bytes.Repeat([]byte{'r'}, int(req.GetResponseSize()))}}, nil
}

func (u *upstream) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for _, p := range req.GetResponseParameters() {
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	return nil
}

func (u *upstream) StreamingInputCall(s grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	var sum int32
	for {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return s.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: sum})
		}
		if err != nil {
			return err
		}
		sum += int32(len(req.GetPayload().GetBody()))
	}
}

func (u *upstream) FullDuplexCall(s grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if s.Context().Err() != nil && u.canceled != nil {
				close(u.canceled)
			}
			return err
		}
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// runtimeUpstream answers PortForward itself (what the runtime would do
// if the proxy passed the call on) and PodSandboxStatus from a table.
type runtimeUpstream struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	sandboxes map[string]*runtimeapi.PodSandboxStatusResponse
	// failing answers PodSandboxStatus of these sandboxes with the code.
	failing map[string]codes.Code
}

func (r *runtimeUpstream) PortForward(_ context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	return &runtimeapi.PortForwardResponse{Url: "http://runtime.invalid/portforward/" + req.GetPodSandboxId()}, nil
}

func (r *runtimeUpstream) PodSandboxStatus(_ context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	if c, ok := r.failing[req.GetPodSandboxId()]; ok {
		return nil, status.Errorf(c, "the runtime fails %q", req.GetPodSandboxId())
	}
	st, ok := r.sandboxes[req.GetPodSandboxId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "an error occurred when try to find sandbox %q: not found", req.GetPodSandboxId())
	}
	return st, nil
}

type harness struct {
	direct, proxied *grpc.ClientConn
	upstreamPath    string // unix:// endpoint of the upstream
	up              *upstream
	rt              *runtimeUpstream
	tokens          *Tokens
	ready           atomic.Bool
	reg             *prometheus.Registry // the proxy's metrics
}

// newHarness serves the upstream and the proxy on unix sockets and
// returns clients of both.
func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{up: &upstream{canceled: make(chan struct{})}, rt: &runtimeUpstream{sandboxes: map[string]*runtimeapi.PodSandboxStatusResponse{}}, tokens: NewTokens(0), reg: prometheus.NewRegistry()}
	h.ready.Store(true)
	upSrv := grpc.NewServer(grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize))
	testpb.RegisterTestServiceServer(upSrv, h.up)
	runtimeapi.RegisterRuntimeServiceServer(upSrv, h.rt)
	serveUnix(t, upSrv, filepath.Join(dir, "upstream.sock"))

	h.upstreamPath = "unix://" + filepath.Join(dir, "upstream.sock")
	upConn, err := Dial(h.upstreamPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { upConn.Close() })
	p := NewProxy(ProxyConfig{Upstream: upConn, Tokens: h.tokens, Metrics: NewMetrics(h.reg),
		StreamURL: func() (string, bool) { return "http://127.0.0.1:10350", h.ready.Load() }})
	serveUnix(t, p.NewServer(), filepath.Join(dir, "proxy.sock"))

	h.direct = dialTest(t, filepath.Join(dir, "upstream.sock"))
	h.proxied = dialTest(t, filepath.Join(dir, "proxy.sock"))
	return h
}

func serveUnix(t *testing.T, srv *grpc.Server, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
}

func dialTest(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestProxyUnaryKeepsMetadataDeadlineAndLargeMessages(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-test-initial", "hello", "x-test-trailing-bin", "\x00\x01bin")
	const big = 15 << 20 // both ways, under the 16 MiB limit with framing
	var header, trailer metadata.MD
	resp, err := testpb.NewTestServiceClient(h.proxied).UnaryCall(ctx,
		&testpb.SimpleRequest{ResponseSize: big, Payload: &testpb.Payload{Body: make([]byte, big)}},
		grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(resp.GetPayload().GetBody()); got != big {
		t.Errorf("response payload: %d bytes, want %d", got, big)
	}
	if got := header.Get("x-echo-initial"); len(got) != 1 || got[0] != "hello" {
		t.Errorf("header x-echo-initial = %q, want [hello]", got)
	}
	if got := header.Get("x-had-deadline"); len(got) != 1 {
		t.Errorf("the upstream saw no deadline (header %v)", header)
	}
	if got := trailer.Get("x-echo-trailing-bin"); len(got) != 1 || got[0] != "\x00\x01bin" {
		t.Errorf("trailer x-echo-trailing-bin = %q, want the binary value", got)
	}
}

func TestProxyPassesStatusCodesAndUnknownMethods(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	_, err := testpb.NewTestServiceClient(h.proxied).UnaryCall(ctx, &testpb.SimpleRequest{
		ResponseStatus: &testpb.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "sandbox is not ready"}})
	if s := status.Convert(err); s.Code() != codes.FailedPrecondition || s.Message() != "sandbox is not ready" {
		t.Errorf("status through the proxy: %v, want FailedPrecondition \"sandbox is not ready\"", err)
	}
	// A service nobody registered, and a method the upstream does not
	// implement: the upstream's own answers, word for word.
	for _, method := range []string{"/no.such.Service/Call", "/grpc.testing.TestService/UnimplementedCall"} {
		var in, out testpb.Empty
		errDirect := h.direct.Invoke(ctx, method, &in, &out)
		errProxied := h.proxied.Invoke(ctx, method, &in, &out)
		if status.Code(errDirect) != codes.Unimplemented || status.Convert(errDirect).Proto().String() != status.Convert(errProxied).Proto().String() {
			t.Errorf("%s: direct %v, proxied %v", method, errDirect, errProxied)
		}
	}
	// Each call passed on is counted as such, with the upstream's code.
	const calls = "portforwardd_cri_calls_total"
	for code, want := range map[string]float64{"FailedPrecondition": 1, "Unimplemented": 2, "OK": 0} {
		if n := gatherCounter(t, h.reg, calls, map[string]string{"handling": "passthrough", "code": code}); n != want {
			t.Errorf(`%s{handling="passthrough",code=%q} = %v, want %v`, calls, code, n, want)
		}
	}
}

func TestProxyStreams(t *testing.T) {
	h := newHarness(t)
	client := testpb.NewTestServiceClient(h.proxied)
	ctx := context.Background()

	// Server streaming: 100 messages.
	var params []*testpb.ResponseParameters
	for i := range 100 {
		params = append(params, &testpb.ResponseParameters{Size: int32(i * 100)})
	}
	out, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		m, err := out.Recv()
		if errors.Is(err, io.EOF) {
			if i != 100 {
				t.Errorf("server stream: %d messages, want 100", i)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(m.GetPayload().GetBody()) != i*100 {
			t.Fatalf("message %d: %d bytes, want %d", i, len(m.GetPayload().GetBody()), i*100)
		}
	}

	// Client streaming: the upstream sums what arrives before CloseSend.
	in, err := client.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if err := in.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 1000)}}); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := in.CloseAndRecv()
	if err != nil || sum.GetAggregatedPayloadSize() != 50000 {
		t.Errorf("client stream: %v, %v, want 50000", sum, err)
	}

	// Bidirectional, in lock step; then the client cancels and the
	// upstream's call ends too.
	cctx, cancel := context.WithCancel(ctx)
	duplex, err := client.FullDuplexCall(cctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		body := []byte(strings.Repeat("x", i))
		if err := duplex.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: body}}); err != nil {
			t.Fatal(err)
		}
		m, err := duplex.Recv()
		if err != nil || !bytes.Equal(m.GetPayload().GetBody(), body) {
			t.Fatalf("duplex round %d: %v %v", i, m, err)
		}
	}
	cancel()
	select {
	case <-h.up.canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream call did not end after the client canceled")
	}
}

func TestProxyPortForward(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	rt := runtimeapi.NewRuntimeServiceClient(h.proxied)

	// Unknown sandbox: the runtime's NotFound.
	_, err := rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "nope", Port: []int32{80}})
	if status.Code(err) != codes.NotFound {
		t.Errorf("unknown sandbox: %v, want NotFound", err)
	}
	// Not ready.
	h.rt.sandboxes["stopped"] = &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{Id: "stopped", State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}}
	_, err = rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "stopped", Port: []int32{80}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("stopped sandbox: %v, want FailedPrecondition", err)
	}
	// Bad port.
	_, err = rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "stopped", Port: []int32{70000}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("port 70000: %v, want InvalidArgument", err)
	}
	// Ready, in the host network (a namespace that exists everywhere).
	h.rt.sandboxes["host"] = &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{
		Id: "host", State: runtimeapi.PodSandboxState_SANDBOX_READY,
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}},
	}}
	resp, err := rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "host", Port: []int32{8080}})
	if err != nil {
		t.Fatal(err)
	}
	token, ok := strings.CutPrefix(resp.GetUrl(), "http://127.0.0.1:10350/portforward/")
	if !ok || len(token) != 8 {
		t.Fatalf("URL %q: want http://127.0.0.1:10350/portforward/<8 characters>", resp.GetUrl())
	}
	g, ok := h.tokens.Redeem(token)
	if !ok || g.SandboxID != "host" || g.Target.Path != HostNetns || len(g.Ports) != 1 || g.Ports[0] != 8080 {
		t.Errorf("grant %+v, %v", g, ok)
	}
	if _, ok := h.tokens.Redeem(token); ok {
		t.Error("a token redeemed twice")
	}

	// The stream server is not ready: the runtime answers.
	h.ready.Store(false)
	resp, err = rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "host", Port: []int32{8080}})
	if err != nil || resp.GetUrl() != "http://runtime.invalid/portforward/host" {
		t.Errorf("not ready: %v, %v; want the runtime's own URL", resp, err)
	}
}

// TestProxyPassesEarlyHeader: an upstream that sends its header at once
// and then waits for the client's messages (any call shape may) has its
// header reach the client through the proxy as directly, so a client
// that waits for the header before it sends is not held up.
func TestProxyPassesEarlyHeader(t *testing.T) {
	dir := t.TempDir()
	up := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		if err := ss.SendHeader(metadata.Pairs("x-early", "1")); err != nil {
			return err
		}
		f := new(frame)
		if err := ss.RecvMsg(f); err != nil {
			return err
		}
		return ss.SendMsg(f)
	}))
	serveUnix(t, up, filepath.Join(dir, "up.sock"))
	upConn, err := Dial("unix://" + filepath.Join(dir, "up.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer upConn.Close()
	p := NewProxy(ProxyConfig{Upstream: upConn, Tokens: NewTokens(0), StreamURL: func() (string, bool) { return "", false }})
	serveUnix(t, p.NewServer(), filepath.Join(dir, "proxy.sock"))

	for _, name := range []string{"up.sock", "proxy.sock"} {
		conn := dialTest(t, filepath.Join(dir, name))
		ctx, cancel := context.WithCancel(context.Background())
		cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/x.Y/Chat", grpc.ForceCodec(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan metadata.MD, 1)
		go func() { md, _ := cs.Header(); got <- md }()
		select {
		case md := <-got:
			if len(md.Get("x-early")) != 1 {
				t.Errorf("%s: header %v, want x-early", name, md)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s: the upstream's header, sent before any message, has not reached the client after 5s", name)
		}
		cancel()
	}
}

// gatherGauge reads the value of the gauge name from reg.
func gatherGauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s in %v", name, mfs)
	return 0
}

// TestProxyTokensOutstandingGauge: cri_tokens_outstanding counts the
// tokens that could still be redeemed: a token the stream server redeems,
// or one that expires unused, is no longer outstanding.
func TestProxyTokensOutstandingGauge(t *testing.T) {
	h := newHarness(t)
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	h.tokens.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	reg := prometheus.NewRegistry()
	upConn, err := Dial(h.upstreamPath)
	if err != nil {
		t.Fatal(err)
	}
	defer upConn.Close()
	p := NewProxy(ProxyConfig{Upstream: upConn, Tokens: h.tokens, Metrics: NewMetrics(reg),
		StreamURL: func() (string, bool) { return "http://127.0.0.1:10350", true }})
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	serveUnix(t, p.NewServer(), sock)
	rt := runtimeapi.NewRuntimeServiceClient(dialTest(t, sock))
	h.rt.sandboxes["host"] = &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{
		Id: "host", State: runtimeapi.PodSandboxState_SANDBOX_READY,
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}},
	}}
	issue := func() string {
		t.Helper()
		resp, err := rt.PortForward(context.Background(), &runtimeapi.PortForwardRequest{PodSandboxId: "host"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetUrl()[strings.LastIndex(resp.GetUrl(), "/")+1:]
	}
	const gauge = "portforwardd_cri_tokens_outstanding"
	first, _ := issue(), issue()
	if n := gatherGauge(t, reg, gauge); n != 2 {
		t.Errorf("two tokens issued: %s = %v, want 2", gauge, n)
	}
	if _, ok := h.tokens.Redeem(first); !ok {
		t.Fatal("redeem failed")
	}
	if n := gatherGauge(t, reg, gauge); n != 1 {
		t.Errorf("one of two tokens redeemed: %s = %v, want 1", gauge, n)
	}
	mu.Lock()
	now = now.Add(TokenTTL)
	mu.Unlock()
	if n := gatherGauge(t, reg, gauge); n != 0 {
		t.Errorf("the other expired: %s = %v, want 0", gauge, n)
	}
}

// TestProxyReconnectsPromptlyToARestartedUpstream: while the runtime is
// down or starting (CRI-O restarting) the proxy's connection attempts fail
// and back off; once the runtime serves, the proxy must be reconnected within the kubelet's
// own CRI client's bound (k8s.io/cri-client: backoff 100 ms to 3 s), not
// gRPC's default of up to 120 s, which would leave the node's runtime
// looking down long after it came back.
func TestProxyReconnectsPromptlyToARestartedUpstream(t *testing.T) {
	dir := t.TempDir()
	upPath := filepath.Join(dir, "up.sock")
	serve := func() *grpc.Server {
		srv := grpc.NewServer()
		testpb.RegisterTestServiceServer(srv, &upstream{canceled: make(chan struct{})})
		ln, err := net.Listen("unix", upPath)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		t.Cleanup(srv.Stop)
		return srv
	}
	first := serve()
	upConn, err := Dial("unix://" + upPath)
	if err != nil {
		t.Fatal(err)
	}
	defer upConn.Close()
	p := NewProxy(ProxyConfig{Upstream: upConn, Tokens: NewTokens(0), StreamURL: func() (string, bool) { return "", false }})
	serveUnix(t, p.NewServer(), filepath.Join(dir, "proxy.sock"))
	client := testpb.NewTestServiceClient(dialTest(t, filepath.Join(dir, "proxy.sock")))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}

	// The runtime goes away and starts again slowly: its socket is there
	// but closes every connection (as a runtime not yet serving does). The
	// proxy's connection attempts fail, five of them.
	first.Stop()
	for s := upConn.GetState(); s == connectivity.Ready; s = upConn.GetState() {
		if !upConn.WaitForStateChange(ctx, s) {
			t.Fatal("the upstream connection stayed ready after the runtime stopped")
		}
	}
	upConn.Connect() // as the kubelet's next call would
	starting, err := net.ListenUnix("unix", &net.UnixAddr{Name: upPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	starting.SetDeadline(time.Now().Add(time.Minute))
	for range 5 {
		c, err := starting.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	starting.Close()

	// It serves: within 4 s (the kubelet's 3 s bound and some slack) the
	// proxy is connected again and a call goes through.
	serve()
	rctx, rcancel := context.WithTimeout(ctx, 4*time.Second)
	defer rcancel()
	for s := upConn.GetState(); s != connectivity.Ready; s = upConn.GetState() {
		upConn.Connect()
		if !upConn.WaitForStateChange(rctx, s) {
			t.Fatalf("the runtime serves again, and the proxy's connection to it is still %v after 4s", s)
		}
	}
	if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("call after the runtime came back: %v", err)
	}
}

// gatherCounter reads the counter name{labels} from reg (0 if absent).
func gatherCounter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestProxyPortForwardRefusalsAndURL pins what TestProxyPortForward left
// open (found by mutation testing, none caught by any test, e2e included):
//   - a port outside 1-65535 is InvalidArgument: 0, and 65536 and 65537,
//     which as a uint16 would be ports 0 and 1 (kills <= 0 to < 0, and
//     > 65535 to > 65536);
//   - a sandbox not ready is FailedPrecondition even when its namespace is
//     there (kills dropping the state check, which forwarded into it);
//   - the runtime's own failure keeps its code (Unavailable, not the
//     NotFound of a missing sandbox that the kubelet reports as such;
//     kills replacing s.Code() by NotFound);
//   - a --stream-url base that ends in / gives .../portforward/<token>,
//     not //portforward (kills dropping the TrimSuffix);
//   - cri_calls_total says which PortForwards the runtime answered,
//     handling="portforward_upstream" (kills counting them as passthrough).
func TestProxyPortForwardRefusalsAndURL(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	hostNetwork := &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}}
	h.rt.sandboxes["host"] = &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{
		Id: "host", State: runtimeapi.PodSandboxState_SANDBOX_READY, Linux: hostNetwork}}
	h.rt.sandboxes["stopped"] = &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{
		Id: "stopped", State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY, Linux: hostNetwork}}
	h.rt.failing = map[string]codes.Code{"busy": codes.Unavailable}

	reg := prometheus.NewRegistry()
	upConn, err := Dial(h.upstreamPath)
	if err != nil {
		t.Fatal(err)
	}
	defer upConn.Close()
	var ready atomic.Bool
	ready.Store(true)
	p := NewProxy(ProxyConfig{Upstream: upConn, Tokens: h.tokens, Metrics: NewMetrics(reg),
		StreamURL: func() (string, bool) { return "https://node1.example:10350/pf/", ready.Load() }})
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	serveUnix(t, p.NewServer(), sock)
	rt := runtimeapi.NewRuntimeServiceClient(dialTest(t, sock))

	for _, port := range []int32{0, -1, 65536, 65537} {
		_, err := rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "host", Port: []int32{80, port}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("port %d: %v, want InvalidArgument", port, err)
		}
	}
	if _, err := rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "host", Port: []int32{1, 65535}}); err != nil {
		t.Errorf("ports 1 and 65535: %v", err)
	}
	_, err = rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "stopped", Port: []int32{80}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "is not running") {
		t.Errorf("a stopped sandbox whose namespace is there: %v, want FailedPrecondition, not running", err)
	}
	_, err = rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "busy", Port: []int32{80}})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("the runtime failing Unavailable: %v, want Unavailable", err)
	}

	resp, err := rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "host", Port: []int32{80}})
	if err != nil {
		t.Fatal(err)
	}
	token, ok := strings.CutPrefix(resp.GetUrl(), "https://node1.example:10350/pf/portforward/")
	if !ok || len(token) != 8 {
		t.Errorf("URL %q: want https://node1.example:10350/pf/portforward/<8 characters>", resp.GetUrl())
	}

	ready.Store(false)
	if _, err := rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "host", Port: []int32{80}}); err != nil {
		t.Fatal(err)
	}
	const calls = "portforwardd_cri_calls_total"
	if n := gatherCounter(t, reg, calls, map[string]string{"handling": "portforward_upstream", "code": "OK"}); n != 1 {
		t.Errorf(`%s{handling="portforward_upstream",code="OK"} = %v, want 1`, calls, n)
	}
	if n := gatherCounter(t, reg, calls, map[string]string{"handling": "passthrough", "code": "OK"}); n != 0 {
		t.Errorf(`%s{handling="passthrough",code="OK"} = %v, want 0 (no other call was made)`, calls, n)
	}
	if n := gatherCounter(t, reg, calls, map[string]string{"handling": "portforward", "code": "OK"}); n != 2 {
		t.Errorf(`%s{handling="portforward",code="OK"} = %v, want 2`, calls, n)
	}
}
