package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// A request refused after it took a session slot (here, a GET with no
// upgrade headers: 400) gives the slot back: with MaxSessions 1, each of
// several in a row gets its own 400, not the sessions limit's 503.
func TestRefusedRequestGivesItsSessionSlotBack(t *testing.T) {
	ts := httptest.NewServer(New(Config{Resolver: fuzzResolver{}, Dialer: refusingDialer{}, Limits: Limits{MaxSessions: 1}}))
	defer ts.Close()
	for i := range 3 {
		resp, err := ts.Client().Get(ts.URL + "/portForward/ns/pod")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("request %d: %d, want 400 (no upgrade headers)", i, resp.StatusCode)
		}
	}
}
