// Package authtest runs a stand-in for the two kube-apiserver endpoints
// portforwardd's webhook mode calls, for tests: TokenReview and
// SubjectAccessReview, answered as the API server answers them (POST only,
// 201 Created with the object and its status, a Status object with 401
// when the caller's own credential is wrong, 404 for other paths).
package authtest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Paths of the two endpoints.
const (
	TokenReviewPath         = "/apis/authentication.k8s.io/v1/tokenreviews"
	SubjectAccessReviewPath = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
)

// APIServer is the stand-in, serving HTTPS on loopback.
type APIServer struct {
	*httptest.Server

	mu       sync.Mutex
	wantAuth string
	tokens   map[string]authenticationv1.UserInfo
	allowed  map[string]bool
	reviews  []authorizationv1.SubjectAccessReviewSpec
	calls    map[string]int
	held     chan struct{} // while not nil, requests wait for it to close
}

// New starts an APIServer, closed when t ends. Callers must present
// "Authorization: Bearer <callerToken>" ("" accepts any caller).
func New(t testing.TB, callerToken string) *APIServer {
	a := &APIServer{tokens: map[string]authenticationv1.UserInfo{}, allowed: map[string]bool{}, calls: map[string]int{}}
	if callerToken != "" {
		a.wantAuth = "Bearer " + callerToken
	}
	a.Server = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

// AddToken makes token authenticate as user.
func (a *APIServer) AddToken(token string, user authenticationv1.UserInfo) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens[token] = user
}

// Allow lets user create nodes/proxy (on any node).
func (a *APIServer) Allow(user string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.allowed[user] = true
}

// SetCallerToken changes the credential callers must present.
func (a *APIServer) SetCallerToken(token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.wantAuth = "Bearer " + token
}

// Calls returns how many requests reached path.
func (a *APIServer) Calls(path string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[path]
}

// Hold makes the requests that arrive from now on wait, counted in
// Calls, until release is called (by t's cleanup at the latest, before
// the server closes).
func (a *APIServer) Hold(t testing.TB) (release func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	held := make(chan struct{})
	a.held = held
	release = sync.OnceFunc(func() {
		a.mu.Lock()
		if a.held == held {
			a.held = nil
		}
		a.mu.Unlock()
		close(held)
	})
	t.Cleanup(release)
	return release
}

// Reviews returns the SubjectAccessReview specs received so far.
func (a *APIServer) Reviews() []authorizationv1.SubjectAccessReviewSpec {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]authorizationv1.SubjectAccessReviewSpec(nil), a.reviews...)
}

func (a *APIServer) serve(w http.ResponseWriter, r *http.Request) {
	status := func(code int, reason metav1.StatusReason, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusFailure, Reason: reason, Message: msg, Code: int32(code)})
	}
	a.mu.Lock()
	if held := a.held; held != nil {
		a.calls[r.URL.Path]++
		a.mu.Unlock()
		<-held
		a.mu.Lock()
		a.calls[r.URL.Path]--
	}
	defer a.mu.Unlock()
	if a.wantAuth != "" && r.Header.Get("Authorization") != a.wantAuth {
		status(http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized")
		return
	}
	if r.Method != http.MethodPost {
		status(http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "the server does not allow this method on the requested resource")
		return
	}
	a.calls[r.URL.Path]++
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case TokenReviewPath:
		var tr authenticationv1.TokenReview
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil || tr.Kind != "TokenReview" || tr.APIVersion != "authentication.k8s.io/v1" {
			status(http.StatusBadRequest, metav1.StatusReasonBadRequest, "bad TokenReview")
			return
		}
		ui, ok := a.tokens[tr.Spec.Token]
		tr.Status = authenticationv1.TokenReviewStatus{Authenticated: ok, User: ui}
		if !ok {
			tr.Status.Error = "invalid bearer token"
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(tr)
	case SubjectAccessReviewPath:
		var sar authorizationv1.SubjectAccessReview
		if err := json.NewDecoder(r.Body).Decode(&sar); err != nil || sar.Kind != "SubjectAccessReview" || sar.APIVersion != "authorization.k8s.io/v1" {
			status(http.StatusBadRequest, metav1.StatusReasonBadRequest, "bad SubjectAccessReview")
			return
		}
		a.reviews = append(a.reviews, sar.Spec)
		ra := sar.Spec.ResourceAttributes
		ok := a.allowed[sar.Spec.User] && ra != nil && ra.Verb == "create" && ra.Resource == "nodes" && ra.Subresource == "proxy"
		sar.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: ok}
		if !ok {
			sar.Status.Reason = "no RBAC policy matched"
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(sar)
	default:
		status(http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
	}
}
