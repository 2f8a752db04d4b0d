package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"

	"github.com/portforwardd/portforwardd/server/auth/authtest"
	"github.com/portforwardd/portforwardd/server/certs/certstest"
)

// newWebhook returns a Webhook for a, as NewWebhook would build it from a
// kubeconfig with a bearer token.
func newWebhook(a *authtest.APIServer, token string) *Webhook {
	return &Webhook{server: a.URL, client: a.Client(), credential: readCredential(token, "", os.ReadFile)}
}

func request(t *testing.T, cert *certstest.Leaf, token string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/portForward/ns/pod", nil)
	if cert != nil {
		leaf, err := x509.ParseCertificate(cert.TLS.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

type denials struct {
	mu      sync.Mutex
	reasons []string
}

func (d *denials) add(r string) { d.mu.Lock(); d.reasons = append(d.reasons, r); d.mu.Unlock() }

func TestCertificates(t *testing.T) {
	ca, rogue := certstest.NewCA(t, "ca"), certstest.NewCA(t, "rogue")
	var d denials
	a, err := New(Config{ClientCAs: ca.Pool, OnDeny: d.add})
	if err != nil {
		t.Fatal(err)
	}
	u, aerr := a.Check(request(t, ca.Client(t, "alice", "ops", "dev"), ""))
	if aerr != nil || u.Name != "alice" || !slices.Equal(slices.Sorted(slices.Values(u.Groups)), []string{"dev", "ops", "system:authenticated"}) {
		t.Fatalf("trusted certificate: user %+v, err %v", u, aerr)
	}
	for name, tc := range map[string]struct {
		r      *http.Request
		status int
		reason string
		text   string
	}{
		"no credentials":     {request(t, nil, ""), 401, ReasonNoCredentials, "client certificate"},
		"untrusted":          {request(t, rogue.Client(t, "mallory"), ""), 401, ReasonBadCertificate, "not trusted"},
		"server certificate": {request(t, ca.Server(t, "srv"), ""), 401, ReasonBadCertificate, "not trusted"},
		"token without hook": {request(t, nil, "abc"), 401, ReasonNoCredentials, "Unauthorized"},
	} {
		_, aerr := a.Check(tc.r)
		if aerr == nil || aerr.Status != tc.status || aerr.Reason != tc.reason || !strings.Contains(aerr.Msg, tc.text) {
			t.Errorf("%s: got %+v, want %d %s containing %q", name, aerr, tc.status, tc.reason, tc.text)
		}
	}
	if len(d.reasons) != 4 {
		t.Errorf("OnDeny saw %v, want 4 denials", d.reasons)
	}

	allow, err := New(Config{ClientCAs: ca.Pool, AllowedNames: []string{"alice"}, AllowedGroups: []string{"system:masters"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cert *certstest.Leaf
		ok   bool
	}{
		{ca.Client(t, "alice"), true},
		{ca.Client(t, "kube-apiserver", "system:masters"), true},
		{ca.Client(t, "bob", "dev"), false},
	} {
		_, aerr := allow.Check(request(t, tc.cert, ""))
		if tc.ok != (aerr == nil) {
			t.Errorf("allow-list, %s: err %v, want allowed=%v", tc.cert.TLS.Leaf.Subject, aerr, tc.ok)
		}
		if aerr != nil && (aerr.Status != 403 || aerr.Reason != ReasonNotAllowed ||
			aerr.Msg != "Forbidden (user=bob, verb=create, resource=nodes, subresource(s)=[proxy])") {
			t.Errorf("allow-list refusal: %+v", aerr)
		}
	}
}

func TestWebhook(t *testing.T) {
	api := authtest.New(t, "daemon-token")
	api.AddToken("good", authenticationv1.UserInfo{Username: "alice", UID: "u1", Groups: []string{"dev"},
		Extra: map[string]authenticationv1.ExtraValue{"scopes": {"a", "b"}}})
	api.AddToken("nobody", authenticationv1.UserInfo{Username: "bob"})
	api.Allow("alice")
	api.Allow("carol")
	ca := certstest.NewCA(t, "ca")
	var d denials
	a, err := New(Config{ClientCAs: ca.Pool, Webhook: newWebhook(api, "daemon-token"), NodeName: "node-1", OnDeny: d.add})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		u, aerr := a.Check(request(t, nil, "good"))
		if aerr != nil || u.Name != "alice" {
			t.Fatalf("good token: %+v %v", u, aerr)
		}
	}
	if n := api.Calls(authtest.TokenReviewPath); n != 1 {
		t.Errorf("%d TokenReviews for one token used 3 times, want 1 (cached)", n)
	}
	sar := api.Reviews()[0]
	ra := sar.ResourceAttributes
	if sar.User != "alice" || sar.UID != "u1" || strings.Join(sar.Groups, ",") != "dev,system:authenticated" ||
		fmt.Sprint(sar.Extra["scopes"]) != "[a b]" || ra == nil || ra.Verb != "create" ||
		ra.Resource != "nodes" || ra.Subresource != "proxy" || ra.Name != "node-1" || ra.Group != "" {
		t.Errorf("SubjectAccessReview spec %+v, attributes %+v", sar, ra)
	}
	if n := api.Calls(authtest.SubjectAccessReviewPath); n != 1 {
		t.Errorf("%d SubjectAccessReviews, want 1 (cached)", n)
	}

	// A certificate user is authorized by the webhook too.
	if _, aerr := a.Check(request(t, ca.Client(t, "carol"), "")); aerr != nil {
		t.Errorf("allowed certificate user: %v", aerr)
	}
	if _, aerr := a.Check(request(t, ca.Client(t, "dave"), "")); aerr == nil || aerr.Status != 403 || aerr.Reason != ReasonForbidden {
		t.Errorf("certificate user without permission: %+v", aerr)
	}
	if _, aerr := a.Check(request(t, nil, "nobody")); aerr == nil || aerr.Status != 403 ||
		aerr.Msg != "Forbidden (user=bob, verb=create, resource=nodes, subresource(s)=[proxy])" {
		t.Errorf("token user without permission: %+v", aerr)
	}
	for i := 0; i < 2; i++ {
		if _, aerr := a.Check(request(t, nil, "forged")); aerr == nil || aerr.Status != 401 || aerr.Reason != ReasonInvalidToken {
			t.Errorf("invalid token: %+v", aerr)
		}
	}
	if n := api.Calls(authtest.TokenReviewPath); n != 3 {
		t.Errorf("%d TokenReviews, want 3 (good, nobody, forged once: denials are cached)", n)
	}

	// The API server refuses the daemon's own credential: a 500 that says
	// so, not a 401 blaming the client.
	api.SetCallerToken("rotated")
	_, aerr := a.Check(request(t, nil, "fresh"))
	if aerr == nil || aerr.Status != 500 || aerr.Reason != ReasonWebhookError || !strings.Contains(aerr.Msg, "401") {
		t.Errorf("webhook refusing the daemon: %+v", aerr)
	}
	api.Close()
	_, aerr = a.Check(request(t, ca.Client(t, "erin"), ""))
	if aerr == nil || aerr.Status != 500 || !strings.HasPrefix(aerr.Msg, "Authorization error (user=erin, verb=create") {
		t.Errorf("API server down: %+v", aerr)
	}
	if got := strings.Join(d.reasons, ","); got != "forbidden,forbidden,invalid_token,invalid_token,webhook_error,webhook_error" {
		t.Errorf("denials %s", got)
	}
}

func TestKubeconfig(t *testing.T) {
	api := authtest.New(t, "from-file")
	api.AddToken("good", authenticationv1.UserInfo{Username: "alice"})
	api.Allow("alice")
	dir := t.TempDir()
	caPEM := api.Certificate().Raw
	certstest.WriteFile(t, filepath.Join(dir, "ca.der"), caPEM)
	caFile := filepath.Join(dir, "api-ca.crt")
	certstest.WriteFile(t, caFile, pemCert(caPEM))
	certstest.WriteFile(t, filepath.Join(dir, "token"), []byte("from-file\n"))
	ca := certstest.NewCA(t, "client-ca")
	leaf := ca.Client(t, "portforwardd")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
current-context: main
clusters:
- name: other
  cluster: {server: "https://wrong.invalid"}
- name: c
  cluster:
    server: %s/
    certificate-authority: api-ca.crt
contexts:
- name: main
  context: {cluster: c, user: u}
users:
- name: u
  user:
    tokenFile: token
    client-certificate-data: %s
    client-key-data: %s
`, api.URL, base64.StdEncoding.EncodeToString(leaf.CertPEM), base64.StdEncoding.EncodeToString(leaf.KeyPEM))
	path := filepath.Join(dir, "kubeconfig")
	certstest.WriteFile(t, path, []byte(kc))
	w, err := NewWebhook(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Webhook: w, NodeName: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if u, aerr := a.Check(request(t, nil, "good")); aerr != nil || u.Name != "alice" {
		t.Fatalf("through the kubeconfig: %+v %v", u, aerr)
	}

	for name, body := range map[string]string{
		"exec plugin":  strings.Replace(kc, "    tokenFile: token\n", "    exec: {command: /bin/true, apiVersion: client.authentication.k8s.io/v1}\n", 1),
		"no context":   strings.Replace(kc, "current-context: main", "current-context: gone", 1),
		"no server":    strings.Replace(kc, "server: "+api.URL+"/", "server: \"\"", 1),
		"bad CA":       strings.Replace(kc, "api-ca.crt", "token", 1),
		"no such user": strings.Replace(kc, "{cluster: c, user: u}", "{cluster: c, user: typo}", 1),
	} {
		p := filepath.Join(dir, "bad")
		certstest.WriteFile(t, p, []byte(body))
		if _, err := NewWebhook(p); err == nil {
			t.Errorf("%s: no error", name)
		} else if name == "exec plugin" && !strings.Contains(err.Error(), "never executes programs") {
			t.Errorf("exec plugin: %v", err)
		}
	}
	if _, err := NewWebhook(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing kubeconfig: no error")
	}

	// In-cluster: the service account's CA and (rotating) token.
	sa := t.TempDir()
	certstest.WriteFile(t, filepath.Join(sa, "ca.crt"), pemCert(caPEM))
	certstest.WriteFile(t, filepath.Join(sa, "token"), []byte("from-file"))
	host, port, _ := strings.Cut(strings.TrimPrefix(api.URL, "https://"), ":")
	w, err = inClusterWebhook(host, port, sa)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := w.TokenReview(t.Context(), "good"); err != nil || u == nil || u.Name != "alice" {
		t.Errorf("in-cluster TokenReview: %+v %v", u, err)
	}
	if _, err := inClusterWebhook("", "", sa); err == nil {
		t.Error("in-cluster outside a pod: no error")
	}
}

func pemCert(der []byte) []byte {
	return []byte("-----BEGIN CERTIFICATE-----\n" + base64.StdEncoding.EncodeToString(der) + "\n-----END CERTIFICATE-----\n")
}

// TestUntrustedCertificateFallsBackToToken: as the kubelet's union of
// authenticators, a client certificate that does not authenticate (not
// signed by the client CA, or with no common name) does not decide: the
// request's bearer token is tried next. Only a request with nothing
// else to try is refused for its certificate.
func TestUntrustedCertificateFallsBackToToken(t *testing.T) {
	api := authtest.New(t, "")
	api.AddToken("good", authenticationv1.UserInfo{Username: "alice", Groups: []string{"system:authenticated"}})
	api.Allow("alice")
	ca, rogue := certstest.NewCA(t, "ca"), certstest.NewCA(t, "rogue")
	var d denials
	a, err := New(Config{ClientCAs: ca.Pool, Webhook: newWebhook(api, ""), NodeName: "n", OnDeny: d.add})
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]*certstest.Leaf{
		"untrusted":      rogue.Client(t, "mallory"),
		"no common name": ca.Client(t, ""),
	} {
		if u, aerr := a.Check(request(t, cert, "good")); aerr != nil || u.Name != "alice" {
			t.Errorf("%s certificate with a valid token: user %+v, err %+v; want alice", name, u, aerr)
		}
		if _, aerr := a.Check(request(t, cert, "forged")); aerr == nil || aerr.Status != 401 || aerr.Reason != ReasonInvalidToken {
			t.Errorf("%s certificate with a forged token: %+v, want 401 %s", name, aerr, ReasonInvalidToken)
		}
	}
	if _, aerr := a.Check(request(t, rogue.Client(t, "mallory"), "")); aerr == nil || aerr.Status != 401 || aerr.Reason != ReasonBadCertificate {
		t.Errorf("untrusted certificate alone: %+v, want 401 %s", aerr, ReasonBadCertificate)
	}
	if got := strings.Join(d.reasons, ","); got != "invalid_token,invalid_token,bad_certificate" {
		t.Errorf("denials %s, want one per refused request", got)
	}
}

// TestAuthenticatedGroupAdded: every authenticated user is in
// system:authenticated, as the kubelet's authenticator adds it, so the
// SubjectAccessReview asks what the kubelet's asks and an allow-list can
// name the group.
func TestAuthenticatedGroupAdded(t *testing.T) {
	api := authtest.New(t, "")
	api.AddToken("plain", authenticationv1.UserInfo{Username: "bob", Groups: []string{"dev"}})
	api.AddToken("already", authenticationv1.UserInfo{Username: "carol", Groups: []string{"system:authenticated", "ops"}})
	ca := certstest.NewCA(t, "ca")
	a, err := New(Config{ClientCAs: ca.Pool, Webhook: newWebhook(api, ""), NodeName: "n"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*http.Request{request(t, ca.Client(t, "alice", "ops"), ""), request(t, nil, "plain"), request(t, nil, "already")} {
		a.Check(r) // refused: nobody is allowed; the reviews are what is checked
	}
	want := map[string]string{"alice": "ops,system:authenticated", "bob": "dev,system:authenticated", "carol": "system:authenticated,ops"}
	reviews := api.Reviews()
	if len(reviews) != len(want) {
		t.Fatalf("%d SubjectAccessReviews, want %d", len(reviews), len(want))
	}
	for _, sar := range reviews {
		if got := strings.Join(sar.Groups, ","); got != want[sar.User] {
			t.Errorf("SubjectAccessReview for %s has groups %q, want %q", sar.User, got, want[sar.User])
		}
	}

	allow, err := New(Config{ClientCAs: ca.Pool, AllowedGroups: []string{"system:authenticated"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, aerr := allow.Check(request(t, ca.Client(t, "dave"), "")); aerr != nil {
		t.Errorf("allow-list of system:authenticated refused a trusted certificate: %+v", aerr)
	}
}

// TestWebSocketProtocolToken: a WebSocket client that cannot set headers
// (a browser) gives its bearer token as the subprotocol
// base64url.bearer.authorization.k8s.io.<token, base64url>, which the
// kubelet accepts beside the Authorization header.
func TestWebSocketProtocolToken(t *testing.T) {
	_, a := aliceWebhook(t)
	ws := func(protocols ...string) *http.Request {
		r := request(t, nil, "")
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		r.Header["Sec-Websocket-Protocol"] = protocols
		return r
	}
	enc := func(token string) string {
		return "base64url.bearer.authorization.k8s.io." + base64.RawURLEncoding.EncodeToString([]byte(token))
	}
	if u, aerr := a.Check(ws("v4.channel.k8s.io, " + enc("good"))); aerr != nil || u.Name != "alice" {
		t.Errorf("token in the subprotocols: user %+v, err %+v; want alice", u, aerr)
	}
	if u, aerr := a.Check(ws("v4.channel.k8s.io", enc("good"))); aerr != nil || u.Name != "alice" {
		t.Errorf("token in a second Sec-WebSocket-Protocol header: user %+v, err %+v; want alice", u, aerr)
	}
	for name, tc := range map[string]struct {
		r      *http.Request
		reason string
	}{
		"forged token":      {ws("v4.channel.k8s.io, " + enc("forged")), ReasonInvalidToken},
		"bad encoding":      {ws("v4.channel.k8s.io, base64url.bearer.authorization.k8s.io.!!"), ReasonInvalidToken},
		"two tokens":        {ws("v4.channel.k8s.io, " + enc("good") + ", " + enc("good")), ReasonInvalidToken},
		"no other protocol": {ws(enc("good")), ReasonInvalidToken},
	} {
		if _, aerr := a.Check(tc.r); aerr == nil || aerr.Status != 401 || aerr.Reason != tc.reason {
			t.Errorf("%s: %+v, want 401 %s", name, aerr, tc.reason)
		}
	}
	// Not a WebSocket request: the subprotocol header means nothing.
	r := request(t, nil, "")
	r.Header.Set("Sec-Websocket-Protocol", "v4.channel.k8s.io, "+enc("good"))
	if _, aerr := a.Check(r); aerr == nil || aerr.Reason != ReasonNoCredentials {
		t.Errorf("subprotocol token without a WebSocket upgrade: %+v, want 401 %s", aerr, ReasonNoCredentials)
	}
}

// aliceWebhook returns an API server stand-in where token "good" is user
// alice, allowed to forward, and an Authenticator that asks it.
func aliceWebhook(t *testing.T) (*authtest.APIServer, *Authenticator) {
	t.Helper()
	api := authtest.New(t, "daemon-token")
	api.AddToken("good", authenticationv1.UserInfo{Username: "alice"})
	api.Allow("alice")
	a, err := New(Config{Webhook: newWebhook(api, "daemon-token"), NodeName: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	return api, a
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A burst of sessions with one token that misses the cache is one
// TokenReview and one SubjectAccessReview, as at the kubelet, not one per
// session: a reconnecting fleet of clients does not multiply the API
// server's load.
func TestConcurrentMissesShareOneReview(t *testing.T) {
	api, a := aliceWebhook(t)
	const n = 8
	reqs := make([]*http.Request, n)
	for i := range reqs {
		reqs[i] = request(t, nil, "good")
	}
	release := api.Hold(t)
	errs := make(chan error, n)
	for _, r := range reqs {
		go func() {
			u, aerr := a.Check(r)
			if aerr != nil || u.Name != "alice" {
				errs <- fmt.Errorf("check: %+v %v", u, aerr)
				return
			}
			errs <- nil
		}()
	}
	waitFor(t, "all checks to wait on the API server", func() bool {
		return a.tokens.waiting.Load() == n-1 || api.Calls(authtest.TokenReviewPath) == n
	})
	release()
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := api.Calls(authtest.TokenReviewPath); got != 1 {
		t.Errorf("%d TokenReviews for %d concurrent checks of one token, want 1", got, n)
	}
	if got := api.Calls(authtest.SubjectAccessReviewPath); got != 1 {
		t.Errorf("%d SubjectAccessReviews for %d concurrent checks of one user, want 1", got, n)
	}
}

// A client that leaves while its review is asked does not fail the
// others waiting on that review: they get the API server's answer.
func TestLeavingClientDoesNotFailSharedReview(t *testing.T) {
	api, a := aliceWebhook(t)
	release := api.Hold(t)
	ctx, leave := context.WithCancel(context.Background())
	first := make(chan *Error, 1)
	go func() {
		_, aerr := a.Check(request(t, nil, "good").WithContext(ctx))
		first <- aerr
	}()
	waitFor(t, "the first TokenReview", func() bool { return api.Calls(authtest.TokenReviewPath) == 1 })
	second := make(chan *Error, 1)
	r := request(t, nil, "good")
	go func() {
		_, aerr := a.Check(r)
		second <- aerr
	}()
	waitFor(t, "the second check to wait on the first's review", func() bool { return a.tokens.waiting.Load() == 1 })
	leave()
	if aerr := <-first; aerr == nil {
		t.Error("the check whose client left succeeded")
	}
	release()
	if aerr := <-second; aerr != nil {
		t.Errorf("the check sharing the left client's review: %v", aerr)
	}
	if got := api.Calls(authtest.TokenReviewPath); got != 1 {
		t.Errorf("%d TokenReviews, want 1", got)
	}
}

// Clients that send distinct tokens and leave keep at most maxReviews
// TokenReviews going at the API server: a review goes on when its client
// leaves, so without a bound anyone who reached the listener could keep
// any number going, one per connection it opened and closed.
func TestLeavingClientsHoldAtMostMaxReviews(t *testing.T) {
	api, a := aliceWebhook(t)
	release := api.Hold(t)
	const extra = 8
	ctx, leave := context.WithCancel(context.Background())
	done := make(chan *Error, maxReviews+extra)
	for i := range maxReviews + extra {
		r := request(t, nil, fmt.Sprintf("token-%d", i)).WithContext(ctx)
		go func() {
			_, aerr := a.Check(r)
			done <- aerr
		}()
	}
	waitFor(t, "maxReviews TokenReviews and the other checks waiting for a slot", func() bool {
		return api.Calls(authtest.TokenReviewPath) == maxReviews && a.tokens.waitingSlot.Load() == extra
	})
	leave()
	for range maxReviews + extra {
		if aerr := <-done; aerr == nil || aerr.Reason != ReasonCanceled {
			t.Errorf("a check whose client left: %+v, want %s", aerr, ReasonCanceled)
		}
	}
	if got := api.Calls(authtest.TokenReviewPath); got != maxReviews {
		t.Errorf("%d TokenReviews for %d clients that left, want at most %d", got, maxReviews+extra, maxReviews)
	}
	// Once the API server answers, the slots are free again.
	release()
	if u, aerr := a.Check(request(t, nil, "good")); aerr != nil || u.Name != "alice" {
		t.Fatalf("a check after the reviews ended: %+v, %v", u, aerr)
	}
}

// TestDenialsDoNotEvictAllowedAnswers: a flood of denials (a token of the
// client's invention each time, which anyone who reaches the listener can
// send) fills the cache; the allowed answers stay, and a user who was
// allowed is not asked about again. In one map the denials emptied it.
func TestDenialsDoNotEvictAllowedAnswers(t *testing.T) {
	c := cache[bool]{slots: make(chan struct{}, maxReviews), denied: func(allowed bool) bool { return !allowed }}
	reviews := 0
	ask := func(k string, answer bool) bool {
		t.Helper()
		v, err := c.do(context.Background(), k, func(bool) time.Duration { return time.Hour },
			func(context.Context) (bool, error) { reviews++; return answer, nil })
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if !ask("alice", true) {
		t.Fatal("alice denied")
	}
	for i := range maxCacheEntries + 1 {
		if ask(fmt.Sprintf("forged-%d", i), false) {
			t.Fatal("a forged token allowed")
		}
	}
	before := reviews
	if !ask("alice", true) || reviews != before {
		t.Fatalf("alice asked about again after %d denials (%d reviews, want %d)", maxCacheEntries+1, reviews, before)
	}
	// A key whose answer turns from allowed to denied is denied.
	c.mu.Lock()
	c.m["alice"] = cacheEntry[bool]{v: true, expires: time.Now().Add(-time.Second)}
	c.mu.Unlock()
	if ask("alice", false) || ask("alice", true) {
		t.Fatal("alice allowed after her expired answer was renewed as a denial")
	}
}
