// Package certs serves the forwarding listener's TLS certificate and the
// client CA bundle from files, and picks up new contents without a
// restart: each handshake (at most once a second) and each Watch tick
// stat the files, and changed files are loaded again. A load that fails
// (a half-written file, a key that does not match, a file gone) keeps the
// previous certificate and is reported once; the next change is tried
// again (a file that stays missing is no change).
//
// The TLS configuration it builds: TLS 1.2 or later (Go's default cipher
// suites, which are AEAD-only with forward secrecy for 1.2), ALPN h2 then
// http/1.1, and client certificates requested but not verified here:
// verification against the current CA bundle happens per request (package
// auth), so that a missing or untrusted certificate is a clear HTTP 401 and
// a counted denial rather than a handshake alert.
package certs
