package auth

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"

	"github.com/portforwardd/portforwardd/server/auth/authtest"
	"github.com/portforwardd/portforwardd/server/certs/certstest"
)

// A denial is reused for DeniedTTL at most, however long allowed answers
// are kept: a token just created, or a permission just granted, works
// within the kubelet's 30 s.
func TestDenialsAreCachedForDeniedTTLAtMost(t *testing.T) {
	api := authtest.New(t, "daemon-token")
	api.AddToken("bob-token", authenticationv1.UserInfo{Username: "bob"})
	a, err := New(Config{Webhook: newWebhook(api, "daemon-token"), NodeName: "n", CacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if _, aerr := a.Check(request(t, nil, "forged")); aerr == nil || aerr.Reason != ReasonInvalidToken {
		t.Fatalf("forged token: %+v", aerr)
	}
	if _, aerr := a.Check(request(t, nil, "bob-token")); aerr == nil || aerr.Reason != ReasonForbidden {
		t.Fatalf("bob without permission: %+v", aerr)
	}
	after := time.Now()
	key := sha256.Sum256([]byte("forged"))
	a.tokens.mu.Lock()
	tok, tokOK := a.tokens.neg[string(key[:])]
	a.tokens.mu.Unlock()
	a.allow.mu.Lock()
	var sar cacheEntry[bool]
	sars := 0
	for _, e := range a.allow.neg {
		sar, sars = e, sars+1
	}
	a.allow.mu.Unlock()
	if !tokOK || sars != 1 {
		t.Fatalf("cached denials: token %v, %d SubjectAccessReview denials; want one of each", tokOK, sars)
	}
	for what, e := range map[string]time.Time{"invalid token": tok.expires, "forbidden user": sar.expires} {
		if e.Before(before.Add(DeniedTTL)) || e.After(after.Add(DeniedTTL)) {
			t.Errorf("%s cached until %v from now, want %v", what, e.Sub(after), DeniedTTL)
		}
	}
}

// A review that failed is asked again by the next request: the API
// server's hiccup is no denial to repeat for the cache's lifetime.
func TestWebhookErrorsAreNotCached(t *testing.T) {
	api := authtest.New(t, "daemon-token")
	api.AddToken("good", authenticationv1.UserInfo{Username: "alice"})
	api.Allow("alice")
	api.Allow("carol")
	ca := certstest.NewCA(t, "ca")
	a, err := New(Config{ClientCAs: ca.Pool, Webhook: newWebhook(api, "daemon-token"), NodeName: "n"})
	if err != nil {
		t.Fatal(err)
	}
	reqs := map[string]func() *http.Request{
		"token":       func() *http.Request { return request(t, nil, "good") },
		"certificate": func() *http.Request { return request(t, ca.Client(t, "carol"), "") },
	}
	api.SetCallerToken("rotated")
	for what, r := range reqs {
		if _, aerr := a.Check(r()); aerr == nil || aerr.Status != http.StatusInternalServerError || aerr.Reason != ReasonWebhookError {
			t.Fatalf("%s while the API server refuses the daemon: %+v", what, aerr)
		}
	}
	api.SetCallerToken("daemon-token")
	for what, r := range reqs {
		if _, aerr := a.Check(r()); aerr != nil {
			t.Errorf("%s once the API server answers again: %+v", what, aerr)
		}
	}
}

// Authorization answers are per user, groups and extra: a user allowed
// as a member of one group is reviewed again with other groups or extra,
// not let through on the first answer.
func TestAuthorizationIsCachedPerGroupsAndExtra(t *testing.T) {
	api := authtest.New(t, "daemon-token")
	api.AddToken("scoped-a", authenticationv1.UserInfo{Username: "erin", UID: "u", Groups: []string{"g"},
		Extra: map[string]authenticationv1.ExtraValue{"scopes": {"a"}}})
	api.AddToken("scoped-b", authenticationv1.UserInfo{Username: "erin", UID: "u", Groups: []string{"g"},
		Extra: map[string]authenticationv1.ExtraValue{"scopes": {"b"}}})
	ca := certstest.NewCA(t, "ca")
	a, err := New(Config{ClientCAs: ca.Pool, Webhook: newWebhook(api, "daemon-token"), NodeName: "n"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*http.Request{
		request(t, ca.Client(t, "dave", "ops"), ""), request(t, ca.Client(t, "dave", "dev"), ""),
		request(t, nil, "scoped-a"), request(t, nil, "scoped-b"),
	} {
		a.Check(r) // refused: nobody is allowed; the reviews are what is checked
	}
	want := []string{"dave [ops system:authenticated] map[]", "dave [dev system:authenticated] map[]",
		"erin [g system:authenticated] map[scopes:[a]]", "erin [g system:authenticated] map[scopes:[b]]"}
	var got []string
	for _, sar := range api.Reviews() {
		got = append(got, fmt.Sprintf("%s %v %v", sar.User, sar.Groups, sar.Extra))
	}
	if !slices.Equal(got, want) {
		t.Errorf("SubjectAccessReviews %q, want %q", got, want)
	}
}
