package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// webhookTimeout bounds one TokenReview or SubjectAccessReview.
const webhookTimeout = 10 * time.Second

// Webhook asks the API server: TokenReview for bearer tokens,
// SubjectAccessReview for permissions.
type Webhook struct {
	server string // https://host:port, no trailing slash
	client *http.Client
	// credential returns the Authorization header value for the API
	// server, read anew so that rotated tokens are used ("" for none).
	credential func() (string, error)
}

// TokenReview returns the user a token belongs to, nil if the API server
// says it is not valid.
func (w *Webhook) TokenReview(ctx context.Context, token string) (*User, error) {
	req := authenticationv1.TokenReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview"},
		Spec:     authenticationv1.TokenReviewSpec{Token: token},
	}
	var resp authenticationv1.TokenReview
	if err := w.post(ctx, "/apis/authentication.k8s.io/v1/tokenreviews", &req, &resp); err != nil {
		return nil, fmt.Errorf("token review: %w", err)
	}
	if !resp.Status.Authenticated {
		return nil, nil
	}
	ui := resp.Status.User
	u := &User{Name: ui.Username, UID: ui.UID, Groups: ui.Groups}
	if len(ui.Extra) > 0 {
		u.Extra = make(map[string][]string, len(ui.Extra))
		for k, v := range ui.Extra {
			u.Extra[k] = v
		}
	}
	return u, nil
}

// SubjectAccessReview reports whether u may create nodes/proxy on node.
func (w *Webhook) SubjectAccessReview(ctx context.Context, u *User, node string) (bool, error) {
	req := authorizationv1.SubjectAccessReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "authorization.k8s.io/v1", Kind: "SubjectAccessReview"},
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: u.Name, UID: u.UID, Groups: u.Groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: "create", Group: "", Version: "v1", Resource: "nodes", Subresource: "proxy", Name: node,
			},
		},
	}
	if len(u.Extra) > 0 {
		req.Spec.Extra = make(map[string]authorizationv1.ExtraValue, len(u.Extra))
		for k, v := range u.Extra {
			req.Spec.Extra[k] = v
		}
	}
	var resp authorizationv1.SubjectAccessReview
	if err := w.post(ctx, "/apis/authorization.k8s.io/v1/subjectaccessreviews", &req, &resp); err != nil {
		return false, fmt.Errorf("subject access review: %w", err)
	}
	return resp.Status.Allowed && !resp.Status.Denied, nil
}

func (w *Webhook) post(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, webhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.server+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "portforwardd")
	if w.credential != nil {
		cred, err := w.credential()
		if err != nil {
			return err
		}
		if cred != "" {
			req.Header.Set("Authorization", cred)
		}
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		var st metav1.Status
		if json.Unmarshal(data, &st) == nil && st.Message != "" {
			return fmt.Errorf("API server answered %s: %s", resp.Status, st.Message)
		}
		return fmt.Errorf("API server answered %s", resp.Status)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// readCredential returns a function giving "Bearer <token>" from a fixed
// token or a token file (read at most once a minute, so rotated
// service-account tokens are picked up).
func readCredential(token, tokenFile string, readFile func(string) ([]byte, error)) func() (string, error) {
	if token != "" {
		return func() (string, error) { return "Bearer " + token, nil }
	}
	if tokenFile == "" {
		return nil
	}
	var (
		mu      sync.Mutex
		cached  string
		expires time.Time
	)
	return func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Now().Before(expires) {
			return cached, nil
		}
		b, err := readFile(tokenFile)
		if err != nil {
			return "", fmt.Errorf("read token file: %w", err)
		}
		cached, expires = "Bearer "+strings.TrimSpace(string(b)), time.Now().Add(time.Minute)
		return cached, nil
	}
}
