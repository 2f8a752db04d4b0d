package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// /readyz answers 503 until the forwarding listener is up, then 200.
func TestReadyzFollowsTheListener(t *testing.T) {
	s := New(Config{Resolver: fuzzResolver{}, Dialer: refusingDialer{}})
	ts := httptest.NewServer(s.MetricsHandler())
	defer ts.Close()
	for _, want := range []int{http.StatusServiceUnavailable, http.StatusOK} {
		resp, err := ts.Client().Get(ts.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("/readyz with the listener serving=%v: %d, want %d", want == http.StatusOK, resp.StatusCode, want)
		}
		s.MarkServing()
	}
}
