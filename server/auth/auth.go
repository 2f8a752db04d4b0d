package auth

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Defaults for Config fields left zero.
const (
	// DefaultCacheTTL is how long an allowed answer is reused (the
	// kubelet's webhook cache TTLs are 2m for authentication and 5m for
	// allowed authorizations).
	DefaultCacheTTL = 2 * time.Minute
	// DeniedTTL bounds how long a denial is reused (the kubelet's 30s).
	DeniedTTL = 30 * time.Second
	// maxCacheEntries bounds each cache's allowed answers, and its
	// denials apart; either is emptied when full.
	maxCacheEntries = 10000
	// maxReviews bounds the reviews of each kind (TokenReview,
	// SubjectAccessReview) in flight at the API server. A review goes on
	// when its client leaves, so without a bound anyone who reaches the
	// listener could keep any number going by sending distinct tokens
	// and closing the connection; checks beyond it wait for a slot.
	maxReviews = 64
)

// Reasons of denials, for metrics.
const (
	ReasonNoCredentials  = "no_credentials"
	ReasonBadCertificate = "bad_certificate"
	ReasonInvalidToken   = "invalid_token"
	ReasonNotAllowed     = "not_allowed"
	ReasonForbidden      = "forbidden"
	ReasonWebhookError   = "webhook_error"
	// ReasonCanceled is no denial: the client went away (closed its
	// connection, reset its HTTP/2 stream) before its review was
	// answered. It is not told to Config.OnDeny.
	ReasonCanceled = "canceled"
)

// StatusClientClosedRequest is the status of a check whose client went
// away (nginx's 499): nobody reads the answer, and it is no failure of
// the daemon's or the API server's.
const StatusClientClosedRequest = 499

// errClientLeft is the cache's error for a caller whose context ended
// before the review it waits on was answered.
var errClientLeft = errors.New("the client went away before its review was answered")

// canceled is the answer to a check whose client went away.
func canceled() *Error {
	return &Error{Status: StatusClientClosedRequest, Reason: ReasonCanceled, Msg: "client closed request"}
}

// User is an authenticated client.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// Config configures an Authenticator.
type Config struct {
	// ClientCAs returns the CA pool that client certificates must chain
	// to, now (it may change when files are reloaded); nil: certificates
	// are not accepted.
	ClientCAs func() *x509.CertPool
	// AllowedNames and AllowedGroups, when either is set and there is no
	// Webhook, are the certificate users let through: a user named in
	// AllowedNames or in one of AllowedGroups.
	AllowedNames, AllowedGroups []string
	// Webhook, if set, checks bearer tokens and authorizes every user.
	Webhook *Webhook
	// NodeName is the node whose proxy subresource is authorized.
	NodeName string
	// CacheTTL is how long answers are reused; zero means
	// DefaultCacheTTL.
	CacheTTL time.Duration
	// OnDeny, if set, is told the reason of each refused request.
	OnDeny func(reason string)
}

// Authenticator decides whether a request may forward.
type Authenticator struct {
	cfg    Config
	tokens cache[*User]
	allow  cache[bool]
}

// New returns an Authenticator; it needs ClientCAs or a Webhook.
func New(cfg Config) (*Authenticator, error) {
	if cfg.ClientCAs == nil && cfg.Webhook == nil {
		return nil, errors.New("auth: neither a client CA nor a webhook is configured")
	}
	if cfg.Webhook != nil && cfg.NodeName == "" {
		return nil, errors.New("auth: the webhook authorizer needs the node name")
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	a := &Authenticator{cfg: cfg}
	a.tokens.slots = make(chan struct{}, maxReviews)
	a.tokens.denied = func(u *User) bool { return u == nil }
	a.allow.slots = make(chan struct{}, maxReviews)
	a.allow.denied = func(allowed bool) bool { return !allowed }
	return a, nil
}

// Error is a refusal: the HTTP status, a one-line message and a reason
// for metrics.
type Error struct {
	Status int
	Reason string
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

func (a *Authenticator) deny(status int, reason, msg string) *Error {
	if a.cfg.OnDeny != nil {
		a.cfg.OnDeny(reason)
	}
	return &Error{Status: status, Reason: reason, Msg: msg}
}

// Check authenticates r and authorizes its user to forward; it returns the
// user, or the refusal to answer with.
func (a *Authenticator) Check(r *http.Request) (*User, *Error) {
	u, err := a.authenticate(r)
	if err != nil {
		return nil, err
	}
	if err := a.authorize(r.Context(), u); err != nil {
		return nil, err
	}
	return u, nil
}

// authenticate tries the client certificate, then the bearer token, as
// the kubelet's union of authenticators does: a certificate that does not
// authenticate (untrusted, no common name) leaves the decision to the
// token, and is the refusal only when there is no token to try.
func (a *Authenticator) authenticate(r *http.Request) (*User, *Error) {
	var certErr *Error
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && a.cfg.ClientCAs != nil {
		u, err := a.certificateUser(r.TLS.PeerCertificates)
		if err == nil {
			return u, nil
		}
		certErr = err
	}
	if token, ok := bearerToken(r.Header); ok && a.cfg.Webhook != nil {
		return a.tokenUser(r.Context(), token)
	}
	if token, msg, ok := protocolToken(r.Header); ok && a.cfg.Webhook != nil {
		if msg != "" {
			return nil, a.deny(http.StatusUnauthorized, ReasonInvalidToken, "Unauthorized: "+msg)
		}
		return a.tokenUser(r.Context(), token)
	}
	if certErr != nil {
		return nil, a.deny(certErr.Status, certErr.Reason, certErr.Msg)
	}
	var want []string
	if a.cfg.ClientCAs != nil {
		want = append(want, "a client certificate signed by the client CA")
	}
	if a.cfg.Webhook != nil {
		want = append(want, "a bearer token")
	}
	return nil, a.deny(http.StatusUnauthorized, ReasonNoCredentials,
		"Unauthorized: authentication required: present "+strings.Join(want, " or "))
}

// certificateUser is the user a client certificate names; its refusal is
// not counted yet (authenticate decides whether it is the answer).
func (a *Authenticator) certificateUser(chain []*x509.Certificate) (*User, *Error) {
	refuse := func(msg string) *Error {
		return &Error{Status: http.StatusUnauthorized, Reason: ReasonBadCertificate, Msg: msg}
	}
	pool := a.cfg.ClientCAs()
	if pool == nil {
		return nil, refuse("Unauthorized: client certificates are not accepted")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, refuse("Unauthorized: client certificate not trusted: " + oneLine(err.Error()))
	}
	if leaf.Subject.CommonName == "" {
		return nil, refuse("Unauthorized: client certificate has no common name")
	}
	return withAuthenticatedGroup(&User{Name: leaf.Subject.CommonName, Groups: slices.Clone(leaf.Subject.Organization)}), nil
}

// Groups the kubelet's authenticator treats specially.
const (
	groupAuthenticated   = "system:authenticated"
	groupUnauthenticated = "system:unauthenticated"
	userAnonymous        = "system:anonymous"
)

// withAuthenticatedGroup returns u in system:authenticated, as the
// kubelet's authenticator (the API server's AuthenticatedGroupAdder) puts
// every user it authenticates: RBAC bindings to the group, and an
// allow-list naming it, then apply as they do at the kubelet.
func withAuthenticatedGroup(u *User) *User {
	if u.Name == userAnonymous || slices.Contains(u.Groups, groupAuthenticated) || slices.Contains(u.Groups, groupUnauthenticated) {
		return u
	}
	u.Groups = append(slices.Clip(u.Groups), groupAuthenticated)
	return u
}

func (a *Authenticator) tokenUser(ctx context.Context, token string) (*User, *Error) {
	key := sha256.Sum256([]byte(token))
	u, err := a.tokens.do(ctx, string(key[:]), func(u *User) time.Duration {
		if u == nil {
			return min(a.cfg.CacheTTL, DeniedTTL)
		}
		return a.cfg.CacheTTL
	}, func(ctx context.Context) (*User, error) {
		u, err := a.cfg.Webhook.TokenReview(ctx, token)
		if u != nil {
			u = withAuthenticatedGroup(u)
		}
		return u, err
	})
	if errors.Is(err, errClientLeft) {
		return nil, canceled()
	}
	if err != nil {
		return nil, a.deny(http.StatusInternalServerError, ReasonWebhookError, "Authentication error: "+oneLine(err.Error()))
	}
	if u == nil {
		return nil, a.deny(http.StatusUnauthorized, ReasonInvalidToken, "Unauthorized: invalid bearer token")
	}
	return u, nil
}

func (a *Authenticator) authorize(ctx context.Context, u *User) *Error {
	forbidden := func(reason string) *Error {
		return a.deny(http.StatusForbidden, reason, fmt.Sprintf(
			"Forbidden (user=%s, verb=create, resource=nodes, subresource(s)=[proxy])", u.Name))
	}
	if a.cfg.Webhook == nil {
		if len(a.cfg.AllowedNames) == 0 && len(a.cfg.AllowedGroups) == 0 {
			return nil
		}
		if slices.Contains(a.cfg.AllowedNames, u.Name) ||
			slices.ContainsFunc(u.Groups, func(g string) bool { return slices.Contains(a.cfg.AllowedGroups, g) }) {
			return nil
		}
		return forbidden(ReasonNotAllowed)
	}
	allowed, err := a.allow.do(ctx, userKey(u), func(allowed bool) time.Duration {
		if !allowed {
			return min(a.cfg.CacheTTL, DeniedTTL)
		}
		return a.cfg.CacheTTL
	}, func(ctx context.Context) (bool, error) {
		return a.cfg.Webhook.SubjectAccessReview(ctx, u, a.cfg.NodeName)
	})
	if errors.Is(err, errClientLeft) {
		return canceled()
	}
	if err != nil {
		return a.deny(http.StatusInternalServerError, ReasonWebhookError, fmt.Sprintf(
			"Authorization error (user=%s, verb=create, resource=nodes, subresource(s)=[proxy]): %s", u.Name, oneLine(err.Error())))
	}
	if !allowed {
		return forbidden(ReasonForbidden)
	}
	return nil
}

// userKey is a cache key for everything a SubjectAccessReview depends on.
func userKey(u *User) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q %q %q", u.Name, u.UID, u.Groups)
	keys := make([]string, 0, len(u.Extra))
	for k := range u.Extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %q=%q", k, u.Extra[k])
	}
	return b.String()
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(h http.Header) (string, bool) {
	v := h.Get("Authorization")
	scheme, token, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// bearerProtocolPrefix starts the WebSocket subprotocol that carries a
// bearer token, base64url-encoded without padding, for clients that
// cannot set headers (the API server's and kubelet's
// ProtocolAuthenticator).
const bearerProtocolPrefix = "base64url.bearer.authorization.k8s.io."

// protocolToken returns the bearer token of a WebSocket upgrade's
// subprotocols; ok says the request offers one, and msg, if not empty,
// why it is not usable (the kubelet's checks: one token, base64url,
// UTF-8, and another subprotocol to answer with).
func protocolToken(h http.Header) (token, msg string, ok bool) {
	if !strings.EqualFold(strings.TrimSpace(h.Get("Upgrade")), "websocket") {
		return "", "", false
	}
	others := 0
	for _, v := range h.Values("Sec-Websocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			p = strings.TrimSpace(p)
			enc, isToken := strings.CutPrefix(p, bearerProtocolPrefix)
			if !isToken {
				if p != "" {
					others++
				}
				continue
			}
			if ok {
				return "", "multiple base64url.bearer.authorization.k8s.io tokens specified", true
			}
			ok = true
			b, err := base64.RawURLEncoding.DecodeString(enc)
			if err != nil || !utf8.Valid(b) {
				return "", "invalid base64url.bearer.authorization.k8s.io token", true
			}
			token = string(b)
		}
	}
	switch {
	case !ok || token == "":
		return "", "", false
	case others == 0:
		return "", "missing additional subprotocol beside the bearer token", true
	}
	return token, "", true
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// cache is a small TTL map, emptied when it grows past maxCacheEntries,
// that asks once for a key many requests miss at the same time (as the
// kubelet's cached authenticator does): a burst of sessions with one
// token, or one user, is one review, not one each. Denials are kept
// apart: anyone who reaches the listener can make them (a token of its
// own invention each time), and in one map they emptied it of the
// allowed answers, each of which then cost a review again.
type cache[V any] struct {
	mu       sync.Mutex
	m        map[string]cacheEntry[V] // allowed answers
	neg      map[string]cacheEntry[V] // denials
	denied   func(V) bool
	inflight map[string]*flight[V]
	// slots holds a value for each review in flight (maxReviews).
	slots chan struct{}
	// waiting counts callers waiting on another's review, and
	// waitingSlot those waiting for a slot to start one (for tests).
	waiting, waitingSlot atomic.Int64
}

type cacheEntry[V any] struct {
	v       V
	expires time.Time
}

// flight is a review in progress: done is closed once v and err are set.
type flight[V any] struct {
	done chan struct{}
	v    V
	err  error
}

// lookup returns the unexpired answer for k; c.mu is held.
func (c *cache[V]) lookup(k string) (V, bool) {
	now := time.Now()
	for _, m := range []map[string]cacheEntry[V]{c.m, c.neg} {
		if e, ok := m[k]; ok && !now.After(e.expires) {
			return e.v, true
		}
	}
	var zero V
	return zero, false
}

// store caches v for k; c.mu is held.
func (c *cache[V]) store(k string, v V, ttl time.Duration) {
	m, other := &c.m, c.neg
	if c.denied != nil && c.denied(v) {
		m, other = &c.neg, c.m
	}
	delete(other, k)
	if *m == nil || len(*m) >= maxCacheEntries {
		*m = map[string]cacheEntry[V]{}
	}
	(*m)[k] = cacheEntry[V]{v: v, expires: time.Now().Add(ttl)}
}

// do returns the cached answer for k, or asks review once for all the
// callers that miss k meanwhile and caches its answer for ttl(answer);
// errors are not cached. The review runs apart from the callers'
// contexts (bounded by the webhook's own timeout), so a client that
// leaves does not fail the others waiting on its review; each caller
// waits until the answer or its own context's end (an error wrapping
// errClientLeft). At most cap(c.slots) reviews run at once: a caller
// that would start one waits for a slot first.
func (c *cache[V]) do(ctx context.Context, k string, ttl func(V) time.Duration, review func(context.Context) (V, error)) (V, error) {
	var zero V
	c.mu.Lock()
	if v, ok := c.lookup(k); ok {
		c.mu.Unlock()
		return v, nil
	}
	f, ok := c.inflight[k]
	if !ok {
		c.mu.Unlock()
		c.waitingSlot.Add(1)
		select {
		case c.slots <- struct{}{}:
			c.waitingSlot.Add(-1)
		case <-ctx.Done():
			c.waitingSlot.Add(-1)
			return zero, fmt.Errorf("%w: %w", errClientLeft, context.Cause(ctx))
		}
		c.mu.Lock()
		// Another caller may have asked, or had its answer, meanwhile.
		if v, cached := c.lookup(k); cached {
			c.mu.Unlock()
			<-c.slots
			return v, nil
		}
		if f, ok = c.inflight[k]; ok {
			<-c.slots
		}
	}
	if ok {
		c.waiting.Add(1)
		defer c.waiting.Add(-1)
	} else {
		f = &flight[V]{done: make(chan struct{})}
		if c.inflight == nil {
			c.inflight = map[string]*flight[V]{}
		}
		c.inflight[k] = f
		go func() {
			defer func() { <-c.slots }()
			v, err := review(context.WithoutCancel(ctx))
			c.mu.Lock()
			if err == nil {
				c.store(k, v, ttl(v))
			}
			delete(c.inflight, k)
			f.v, f.err = v, err
			c.mu.Unlock()
			close(f.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.v, f.err
	case <-ctx.Done():
		return zero, fmt.Errorf("%w: %w", errClientLeft, context.Cause(ctx))
	}
}
