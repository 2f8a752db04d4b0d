package e2e

import (
	"net"
	"net/http"
	"net/url"
	"testing"

	"k8s.io/apimachinery/pkg/util/proxy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
)

// startKubelet serves the kubelet's port-forward route for one pod, the
// way the kubelet's server does (k8s.io/kubernetes pkg/kubelet/server
// getPortForward): the ports of a v4 WebSocket request (NewV4Options) go
// into the runtime's PortForward call for the pod's sandbox, and the
// request is then proxied to the URL the runtime answers with by
// apimachinery's UpgradeAwareHandler, as proxyStream does. An upgrade is
// dialed to that URL as it is: the request's query does not go with it
// (UpgradeAwareHandler sets it on the requests it does not upgrade
// only), so a v4 WebSocket's ports reach the daemon by the CRI request.
// rt is the CRI the kubelet is pointed at: here the daemon's CRI proxy.
// It returns the server's address.
//
// It is a kubelet without ExtendWebSocketsToKubelet (before 1.36, or with
// the gate off): one with it answers kubectl's WebSocket tunnel itself,
// with the API server's tunneling handler, and dials the URL with SPDY;
// here that tunnel is a 400 and kubectl falls back to SPDY.
func startKubelet(t *testing.T, rt runtimeapi.RuntimeServiceClient, namespace, pod, sandbox string) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/portForward/"+namespace+"/"+pod, func(w http.ResponseWriter, r *http.Request) {
		opts, err := portforward.NewV4Options(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := rt.PortForward(r.Context(), &runtimeapi.PortForwardRequest{PodSandboxId: sandbox, Port: opts.Ports})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		u, err := url.Parse(resp.GetUrl())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		proxy.NewUpgradeAwareHandler(u, nil /*transport*/, false /*wrapTransport*/, true /*upgradeRequired*/, kubeletResponder{}).ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// kubeletResponder is the kubelet's: a proxy error is a 500 with its text.
type kubeletResponder struct{}

func (kubeletResponder) Error(w http.ResponseWriter, _ *http.Request, err error) {
	http.Error(w, err.Error(), http.StatusInternalServerError)
}
