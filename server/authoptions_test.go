package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portforwardd/portforwardd/server/auth"
	"github.com/portforwardd/portforwardd/server/certs/certstest"
)

// OPTIONS on a /portForward route is authenticated like a forward: its
// answer tells whether the pod runs on this node, which a client with no
// credentials is not told (a 401, not the 204 or 404 of the pod lookup).
func TestOptionsNeedsCredentials(t *testing.T) {
	ca := certstest.NewCA(t, "ca")
	a, err := auth.New(auth.Config{ClientCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics("")
	ts := httptest.NewServer(New(Config{Resolver: fuzzResolver{}, Dialer: refusingDialer{}, Auth: a, Metrics: m}))
	defer ts.Close()
	for _, path := range []string{"/portForward/ns/pod", "/portForward/ns/gone"} {
		req, err := http.NewRequest(http.MethodOptions, ts.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get(HeaderTransports) != "" {
			t.Errorf("OPTIONS %s without credentials: %d, %s %q; want 401 and no transports",
				path, resp.StatusCode, HeaderTransports, resp.Header.Get(HeaderTransports))
		}
	}
}
