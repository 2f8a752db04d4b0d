// Package auth authenticates and authorizes requests to the forwarding
// listener the way a kubelet does (its x509 and webhook modes):
//
//   - x509: a client certificate that chains to the client CA bundle
//     (ExtKeyUsageClientAuth) names the user (CommonName) and its groups
//     (Organization), as the API server's x509 authenticator does; a
//     certificate that does not authenticate leaves the decision to the
//     bearer token, if the request has one, as in the kubelet's union of
//     authenticators; every authenticated user is also in
//     system:authenticated, as at the kubelet;
//   - webhook: a bearer token (the Authorization header, or for a
//     WebSocket upgrade the base64url.bearer.authorization.k8s.io.
//     subprotocol, as the kubelet takes it from clients that cannot set
//     headers) is checked with a TokenReview, and every
//     authenticated user (certificate or token) is authorized with a
//     SubjectAccessReview for verb "create" on the "proxy" subresource of
//     the node — whatever the HTTP method, since a WebSocket upgrade is a
//     GET;
//   - without the webhook, an optional allow-list of user names and groups
//     decides for certificate users.
//
// Answers are 401 (no or bad credentials) and 403 (not allowed) with a
// one-line text that never repeats request headers, and 500 when the API
// server cannot be asked; a client that goes away while its review is
// asked gets 499 (ReasonCanceled), which is neither a denial nor a
// webhook error. Results are cached per token and per user for
// CacheTTL (denials for at most DeniedTTL, and apart, so that a flood of
// invented tokens cannot evict the allowed answers). A review goes on when its
// client leaves, for the others that wait on it; at most 64 of each kind
// are in flight, so clients that send distinct tokens and leave cannot
// keep more going at the API server, and a check beyond that waits for a
// slot (or for its client to leave).
//
// The API server is reached with plain HTTPS and the k8s.io/api types: the
// kubeconfig reader takes certificates, keys, tokens and token files, and
// refuses exec and auth-provider plugins (the daemon never executes
// programs).
package auth
