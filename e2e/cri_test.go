package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/portforwardd/portforwardd/nsenter/nsentertest"
)

// criClient connects to a CRI socket as the kubelet's CRI client does
// (gRPC over a unix socket, 16 MiB messages).
func criClient(t *testing.T, sock string) (*grpc.ClientConn, runtimeapi.RuntimeServiceClient) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, runtimeapi.NewRuntimeServiceClient(conn)
}

// portForwardURL asks rt for a port-forward URL and checks that it points
// at the daemon; it returns the URL's path (/portforward/<token>).
func portForwardURL(t *testing.T, rt runtimeapi.RuntimeServiceClient, d *daemon, sandbox string, ports ...int32) string {
	t.Helper()
	resp, err := rt.PortForward(context.Background(), &runtimeapi.PortForwardRequest{PodSandboxId: sandbox, Port: ports})
	if err != nil {
		t.Fatalf("PortForward: %v", err)
	}
	u, err := url.Parse(resp.GetUrl())
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "http" || u.Host != d.addr || !strings.HasPrefix(u.Path, "/portforward/") || len(u.Path) != len("/portforward/")+8 {
		t.Fatalf("PortForward URL %q: want http://%s/portforward/<8-character token>", resp.GetUrl(), d.addr)
	}
	return u.Path
}

// TestCRIProxyWithContainerd runs the daemon's CRI proxy in front of a
// real containerd and drives it with a CRI client, as the kubelet does.
func TestCRIProxyWithContainerd(t *testing.T) {
	ctrd := startContainerd(t)
	sock := filepath.Join(t.TempDir(), "cri.sock")
	d := startDaemon(t, "--cri-listen", "unix://"+sock, "--cri-upstream", "unix://"+ctrd.sock)
	proxyConn, proxy := criClient(t, sock)
	eventually(t, 10*time.Second, func() (bool, string) {
		_, err := os.Stat(sock)
		return err == nil, fmt.Sprintf("no CRI socket: %v", err)
	})
	ctx := context.Background()

	t.Run("calls pass through unchanged", func(t *testing.T) {
		for _, call := range []struct {
			name string
			do   func(runtimeapi.RuntimeServiceClient) (proto.Message, error)
		}{
			{"Version", func(rt runtimeapi.RuntimeServiceClient) (proto.Message, error) {
				return rt.Version(ctx, &runtimeapi.VersionRequest{})
			}},
			{"Status", func(rt runtimeapi.RuntimeServiceClient) (proto.Message, error) {
				return rt.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
			}},
			{"ListPodSandbox", func(rt runtimeapi.RuntimeServiceClient) (proto.Message, error) {
				return rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
			}},
		} {
			direct, errD := call.do(ctrd.rt)
			proxied, errP := call.do(proxy)
			if errD != nil || errP != nil {
				t.Fatalf("%s: direct %v, proxied %v", call.name, errD, errP)
			}
			if !proto.Equal(direct, proxied) {
				t.Errorf("%s: proxied answer differs:\ndirect:  %v\nproxied: %v", call.name, direct, proxied)
			}
		}
		// The image service, which the kubelet may also point here.
		imgD, errD := runtimeapi.NewImageServiceClient(ctrd.conn).ListImages(ctx, &runtimeapi.ListImagesRequest{})
		imgP, errP := runtimeapi.NewImageServiceClient(proxyConn).ListImages(ctx, &runtimeapi.ListImagesRequest{})
		if errD != nil || errP != nil || !proto.Equal(imgD, imgP) || len(imgP.GetImages()) == 0 {
			t.Errorf("ListImages: direct %v (%v), proxied %v (%v)", imgD, errD, imgP, errP)
		}
	})

	t.Run("unknown and server-streaming methods pass through", func(t *testing.T) {
		var in, out runtimeapi.VersionRequest
		errD := ctrd.conn.Invoke(ctx, "/runtime.v1.RuntimeService/NoSuchMethod", &in, &out)
		errP := proxyConn.Invoke(ctx, "/runtime.v1.RuntimeService/NoSuchMethod", &in, &out)
		if status.Code(errD) != codes.Unimplemented || status.Convert(errD).Message() != status.Convert(errP).Message() || status.Code(errP) != codes.Unimplemented {
			t.Errorf("unknown method: direct %v, proxied %v", errD, errP)
		}
		// GetContainerEvents is server-streaming. The proxy must give the
		// same first answer as containerd: events, or its status.
		first := func(rt runtimeapi.RuntimeServiceClient) (string, error) {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			s, err := rt.GetContainerEvents(cctx, &runtimeapi.GetEventsRequest{})
			if err != nil {
				return "", err
			}
			_, err = s.Recv()
			if status.Code(err) == codes.DeadlineExceeded {
				return "open stream, no event", nil
			}
			return "", err
		}
		gotD, errD := first(ctrd.rt)
		gotP, errP := first(proxy)
		if gotD != gotP || status.Code(errD) != status.Code(errP) || status.Convert(errD).Message() != status.Convert(errP).Message() {
			t.Errorf("GetContainerEvents: direct %q %v, proxied %q %v", gotD, errD, gotP, errP)
		}
	})

	// A real sandbox, created through the proxy, with a server in its netns.
	sandbox, netns := ctrd.runSandbox(t, proxy, "e2e", "web", "aaaaaaaa-0000-0000-0000-000000000001")
	ln, err := nsentertest.Listen(netns, "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	serveEcho(ln)
	remote := port(ln)

	t.Run("PortForward URL serves kubectl's transports", func(t *testing.T) {
		for _, tr := range transports {
			t.Run(tr.name, func(t *testing.T) {
				f := startForward(t, d, tr, portForwardURL(t, proxy, d, sandbox), remote)
				for _, size := range []int{1, 64 << 10, 4 << 20} {
					if err := echoRandom(f.local, size); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
		t.Run("connect-tcp", func(t *testing.T) {
			c, resp, body := dialRaw(t, d, fmt.Sprintf("%s?port=%d", portForwardURL(t, proxy, d, sandbox), remote))
			if c == nil {
				t.Fatalf("connect-tcp: %s %s", resp.Status, body)
			}
			c.Write([]byte("raw into the sandbox"))
			c.CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "raw into the sandbox" {
				t.Fatalf("echo: %q, %v", got, err)
			}
		})
		t.Run("http2", func(t *testing.T) {
			u := fmt.Sprintf("http://%s%s?port=%d", d.addr, portForwardURL(t, proxy, d, sandbox), remote)
			resp, err := h2Client().Post(u, "application/octet-stream", strings.NewReader("h2 into the sandbox"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || err != nil || string(got) != "h2 into the sandbox" {
				t.Fatalf("h2: %s %q %v", resp.Status, got, err)
			}
		})
		t.Run("websocket v4, ports from the CRI request", func(t *testing.T) {
			c, _, err := dialV4(t, d, portForwardURL(t, proxy, d, sandbox, int32(remote)), nil, "v4.channel.k8s.io")
			if err != nil {
				t.Fatal(err)
			}
			c.expectPrefixes(remote)
			c.write(0, []byte("through containerd's sandbox"))
			if got := c.readData(0, len("through containerd's sandbox")); got != "through containerd's sandbox" {
				t.Fatalf("echo: got %q", got)
			}
		})
	})

	t.Run("through the kubelet's streaming proxy", func(t *testing.T) {
		// kubectl's connection reaches the daemon through the kubelet,
		// which asks the CRI (the daemon's proxy) for a URL and proxies
		// the upgrade to it byte for byte.
		kubelet := startKubelet(t, proxy, "e2e", "web", sandbox)
		cfg := &rest.Config{Host: "http://" + kubelet}
		const route = "/portForward/e2e/web"
		for _, tr := range []struct {
			name, protocol string
			dialer         streamhttp.Dialer
		}{
			{"spdy", "spdy", spdyDialerFor(t, cfg, route)},
			// A kubelet without ExtendWebSocketsToKubelet takes no
			// WebSocket tunnel: a WebSocket request without ?port= is a
			// 400 at NewV4Options, so kubectl ≥ 1.31 falls back to SPDY
			// there. (The API server, which kubectl talks to, turns the
			// tunnel into SPDY toward such a kubelet; a 1.36 kubelet with
			// the gate does so itself, which startKubelet does not.)
			{"websocket falls back to spdy", "spdy", portforward.NewFallbackDialerForStreaming(tunnelDialerFor(t, cfg, route), spdyDialerFor(t, cfg, route), streamhttp.IsUpgradeFailure)},
		} {
			t.Run(tr.name, func(t *testing.T) {
				series := fmt.Sprintf(`portforwardd_sessions_total{protocol=%q,result="closed"}`, tr.protocol)
				before := d.metric(t, series)
				f := startForwardWith(t, tr.dialer, remote)
				for _, size := range []int{1, 64 << 10, 4 << 20} {
					if err := echoRandom(f.local, size); err != nil {
						t.Fatal(err)
					}
				}
				// The session ran over the protocol expected, in the
				// daemon behind the kubelet, and ended with the forward.
				f.close()
				eventually(t, 10*time.Second, func() (bool, string) {
					after := d.metric(t, series)
					return after == before+1, fmt.Sprintf("%s went from %v to %v, want one more", series, before, after)
				})
			})
		}
		t.Run("nothing listening", func(t *testing.T) {
			gone, err := nsentertest.Listen(netns, "tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			closed := port(gone)
			gone.Close()
			f := startForwardWith(t, spdyDialerFor(t, cfg, route), closed)
			if err := echoRandom(f.local, 16); err == nil {
				t.Fatal("a forward to a port nothing listens on carried data")
			}
			want := fmt.Sprintf("error forwarding port %d to pod ", closed)
			if msgs := forwardErrors.wait(t, f.local); !hasSubstring(msgs, want) {
				t.Fatalf("errors %q: want the kubelet's text %q", msgs, want)
			}
		})
		t.Run("websocket v4, ports from the kubelet's CRI request", func(t *testing.T) {
			c, resp, err := dialV4At(t, kubelet, route, []int{remote}, "v4.channel.k8s.io")
			if err != nil {
				t.Fatalf("v4 through the kubelet: %v (%v)", err, resp)
			}
			c.expectPrefixes(remote)
			c.write(0, []byte("through the kubelet"))
			if got := c.readData(0, len("through the kubelet")); got != "through the kubelet" {
				t.Fatalf("echo: got %q", got)
			}
		})
	})

	t.Run("a token is single use", func(t *testing.T) {
		path := portForwardURL(t, proxy, d, sandbox)
		f := startForward(t, d, transports[0], path, remote)
		if err := echoRandom(f.local, 1024); err != nil {
			t.Fatal(err)
		}
		_, _, err := spdyDialer(t, d, path).Dial(portforward.PortForwardProtocolV1Name)
		if err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("second use of %s: %v, want a 404 upgrade failure", path, err)
		}
		resp, err := http.Get(d.url("/portforward/notatoken"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("unknown token: %s, want 404", resp.Status)
		}
	})

	t.Run("a token expires", func(t *testing.T) {
		const ttl = 200 * time.Millisecond
		sock := filepath.Join(t.TempDir(), "cri.sock")
		short := startDaemon(t, "--cri-listen", "unix://"+sock, "--cri-upstream", "unix://"+ctrd.sock, "--cri-token-ttl", ttl.String())
		_, rt := criClient(t, sock)
		var path string
		eventually(t, 10*time.Second, func() (bool, string) {
			resp, err := rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: sandbox})
			if err == nil {
				u, _ := url.Parse(resp.GetUrl())
				path = u.Path
			}
			return err == nil, fmt.Sprintf("PortForward: %v", err)
		})
		time.Sleep(ttl + 50*time.Millisecond) // what is tested is the passing of time
		_, _, err := spdyDialer(t, short, path).Dial(portforward.PortForwardProtocolV1Name)
		if err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("expired %s: %v, want a 404 upgrade failure", path, err)
		}
	})

	t.Run("direct mode resolves the pod through CRI", func(t *testing.T) {
		direct := startDaemon(t, "--cri-endpoint", "unix://"+ctrd.sock)
		for _, route := range []string{"/portForward/e2e/web", "/portForward/e2e/web/aaaaaaaa-0000-0000-0000-000000000001"} {
			f := startForward(t, direct, transports[0], route, remote)
			if err := echoRandom(f.local, 256<<10); err != nil {
				t.Fatalf("%s: %v", route, err)
			}
		}
		for _, route := range []string{"/portForward/e2e/nosuchpod", "/portForward/e2e/web/bbbbbbbb-0000-0000-0000-000000000002"} {
			_, _, err := spdyDialer(t, direct, route).Dial(portforward.PortForwardProtocolV1Name)
			if err == nil || !strings.Contains(err.Error(), "pod does not exist") {
				t.Errorf("%s: %v, want 404 pod does not exist", route, err)
			}
		}
	})

	t.Run("missing and stopped sandboxes", func(t *testing.T) {
		_, err := proxy.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "0123456789abcdef", Port: []int32{80}})
		if status.Code(err) != codes.NotFound {
			t.Errorf("unknown sandbox: %v, want NotFound", err)
		}
		// A token issued while the sandbox ran, used after it stopped: the
		// dial fails on the error stream with the namespace gone.
		stale := portForwardURL(t, proxy, d, sandbox)
		if _, err := proxy.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sandbox}); err != nil {
			t.Fatal(err)
		}
		_, err = proxy.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: sandbox, Port: []int32{80}})
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("stopped sandbox: %v, want FailedPrecondition", err)
		}
		f := startForward(t, d, transports[0], stale, remote)
		if err := echoRandom(f.local, 16); err == nil {
			t.Error("a forward into a stopped sandbox carried data")
		}
		msgs := forwardErrors.wait(t, f.local)
		if !hasSubstring(msgs, "network namespace is gone") {
			t.Errorf("errors %q: want the namespace to be gone", msgs)
		}
	})

	if n := d.metric(t, `portforwardd_cri_calls_total{code="OK",handling="portforward"}`); n < 5 {
		t.Errorf("cri_calls_total{portforward,OK} = %v, want at least 5", n)
	}
}

// TestCRIResolverNoticesStoppedHostNetworkPod: the CRI resolver reuses a
// lookup only while the sandbox's namespace file shows it still runs. A
// host-network sandbox has no namespace of its own to show that, so once
// it stops, its pod is not found, at once, as for any other pod; it was
// still forwarded into the node's network for the cache's 10 s.
func TestCRIResolverNoticesStoppedHostNetworkPod(t *testing.T) {
	ctrd := startContainerd(t)
	const uid = "aaaaaaaa-0000-0000-0000-000000000003"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := ctrd.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "hostweb", Namespace: "e2e", Uid: uid},
		Labels: map[string]string{
			"io.kubernetes.pod.name": "hostweb", "io.kubernetes.pod.namespace": "e2e", "io.kubernetes.pod.uid": uid,
		},
		LogDirectory: filepath.Join(ctrd.dir, "podlogs", uid),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_POD, Ipc: runtimeapi.NamespaceMode_POD},
		}},
	}})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\ncontainerd log:\n%s", err, ctrd.log)
	}
	// A server in the node's network, where the pod's would listen.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	serveEcho(ln)

	direct := startDaemon(t, "--cri-endpoint", "unix://"+ctrd.sock)
	f := startForward(t, direct, transports[0], "/portForward/e2e/hostweb", port(ln))
	if err := echoRandom(f.local, 1024); err != nil {
		t.Fatalf("forward to the running host-network pod: %v", err)
	}
	if _, err := ctrd.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: resp.GetPodSandboxId()}); err != nil {
		t.Fatal(err)
	}
	_, _, err = spdyDialer(t, direct, "/portForward/e2e/hostweb").Dial(portforward.PortForwardProtocolV1Name)
	if err == nil || !strings.Contains(err.Error(), "pod does not exist") {
		t.Fatalf("the host-network pod's sandbox stopped: %v, want 404 pod does not exist", err)
	}
}
