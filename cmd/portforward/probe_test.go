package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"k8s.io/client-go/rest"

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
		{"a kubelet", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
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
