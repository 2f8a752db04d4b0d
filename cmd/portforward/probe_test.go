package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/cri-streaming/pkg/streaming/portforward"

	"github.com/portforwardd/portforwardd/nsenter"
	"github.com/portforwardd/portforwardd/server"
)

func TestProbeTransport(t *testing.T) {
	if headerTransports != server.HeaderTransports {
		t.Fatalf("the CLI reads %q, the server writes %q", headerTransports, server.HeaderTransports)
	}
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
		wantErr string
	}{
		{"portforwardd", func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodOptions || r.URL.Path != "/base/portForward/ns/web" || r.Header.Get("Authorization") != "Bearer tok" {
				http.Error(w, "bad probe", http.StatusTeapot)
				return
			}
			w.Header().Set(server.HeaderTransports, "connect-tcp, h2, websocket-spdy, spdy, websocket-v4")
			w.WriteHeader(http.StatusNoContent)
		}, "raw", ""},
		{"h2 first", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(server.HeaderTransports, "h2, spdy")
			w.WriteHeader(http.StatusNoContent)
		}, "h2", ""},
		{"200, not 204", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(server.HeaderTransports, "connect-tcp, h2")
			w.WriteHeader(http.StatusOK)
		}, "raw", ""},
		{"a kubelet", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		}, "", ""},
		{"a server without the route", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "404 page not found", http.StatusNotFound)
		}, "", ""},
		{"unknown pod", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "pod does not exist", http.StatusNotFound)
		}, "", "pod does not exist"},
		{"refused", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "Unauthorized: invalid bearer token", http.StatusUnauthorized)
		}, "", "Unauthorized: invalid bearer token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			base, _ := url.Parse(srv.URL + "/base")
			got, err := probeTransport(context.Background(), &rest.Config{Host: srv.URL, BearerToken: "tok"}, base, "ns", "web")
			if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && err.Error() != tc.wantErr) {
				t.Errorf("got %q, %v; want %q, %q", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// echoForwarder is a kubelet's runtime that echoes every forwarded
// connection.
type echoForwarder struct{}

func (echoForwarder) PortForward(_ context.Context, _, _ string, _ int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	_, err := io.Copy(stream, stream)
	return err
}

// TestAutoKubeletForbidsOptions: a kubelet authorizes OPTIONS with an
// empty verb (only POST is "create" on nodes/proxy), so a user allowed to
// port-forward gets a 403 to the probe; auto then takes kubectl's path,
// where the forward itself is authorized, instead of failing.
func TestAutoKubeletForbidsOptions(t *testing.T) {
	kubelet := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost && r.Method != http.MethodGet {
			// The kubelet's authorization filter, for verb "".
			http.Error(w, "Forbidden (user=alice, verb=, resource=nodes, subresource=proxy)", http.StatusForbidden)
			return
		}
		// The kubelet's getPortForward: the tunnel's WebSocket request has
		// no port query, so it gets a 400 and client-go falls back to SPDY.
		opts, err := portforward.NewV4Options(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		portforward.ServePortForward(w, r, echoForwarder{}, "pod", "", opts, time.Minute, 30*time.Second, portforward.SupportedProtocols)
	}))
	defer kubelet.Close()
	c := startCLI(t, "--server", kubelet.URL, "--address", "127.0.0.1", "pod", ":80")
	echoOnce(t, c.localPort(t), "", "through a kubelet")
}

// TestAutoForbiddenForward: a server that refuses the forward itself as
// well still fails auto before anything listens, with its text, in one
// line.
func TestAutoForbiddenForward(t *testing.T) {
	const refusal = "Forbidden (user=bob, verb=create, resource=nodes, subresource(s)=[proxy])"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, refusal, http.StatusForbidden)
	}))
	defer srv.Close()
	c := startCLI(t, "--server", srv.URL, "--address", "127.0.0.1", "pod", ":80")
	code := c.exitCode(t, "the refusal")
	out, errOut := c.stdout.String(), c.stderr.String()
	if code != 1 || out != "" || len(lines(errOut)) != 1 || !strings.HasPrefix(errOut, "error: ") || !strings.Contains(errOut, refusal) {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1, no stdout, one line \"error: …%s\"", code, out, errOut, refusal)
	}
}

// TestNetnsGoneTextIsTheDaemons: the CLI recognizes a pod whose namespace
// is gone by the daemon's text for it.
func TestNetnsGoneTextIsTheDaemons(t *testing.T) {
	if got := nsenter.ErrNetnsGone.Error(); got != netnsGoneText {
		t.Fatalf("nsenter.ErrNetnsGone says %q; the CLI looks for %q", got, netnsGoneText)
	}
}
