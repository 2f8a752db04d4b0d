package certs_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/portforwardd/portforwardd/server/certs"
	"github.com/portforwardd/portforwardd/server/certs/certstest"
)

// servedLeaf handshakes with a server using cfg over a real loopback
// connection and returns the certificate the client saw.
func servedLeaf(t *testing.T, cfg *tls.Config, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.(*tls.Conn).Handshake()
		c.Close()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := c.ConnectionState()
	if st.NegotiatedProtocol != "h2" {
		t.Errorf("ALPN: got %q, want h2", st.NegotiatedProtocol)
	}
	if st.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x below 1.2", st.Version)
	}
	return st.PeerCertificates[0]
}

func TestReloadServesNewFilesAndKeepsOldOnFailure(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "ca")
	a, b, c := ca.Server(t, "a"), ca.Server(t, "b"), ca.Server(t, "c")
	certFile, keyFile := a.WriteFiles(t, dir, "tls")
	clientCA := filepath.Join(dir, "ca.crt")
	certstest.WriteFile(t, clientCA, ca.CertPEM)

	r, err := certs.New(certs.Files{CertFile: certFile, KeyFile: keyFile, ClientCAFile: clientCA})
	if err != nil {
		t.Fatal(err)
	}
	var reloads []error
	r.OnReload = func(err error) { reloads = append(reloads, err) }
	cfg := r.TLSConfig()
	if cfg.ClientAuth != tls.RequestClientCert {
		t.Errorf("ClientAuth %v with a client CA, want RequestClientCert (verified per request)", cfg.ClientAuth)
	}
	if got := servedLeaf(t, cfg, ca.Pool()); got.Subject.CommonName != "a" {
		t.Fatalf("served %q, want a", got.Subject.CommonName)
	}
	if err := r.Check(); err != nil || len(reloads) != 0 {
		t.Fatalf("Check with nothing changed: err %v, reloads %v", err, reloads)
	}

	b.WriteFiles(t, dir, "tls")
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	if got := servedLeaf(t, cfg, ca.Pool()); got.Subject.CommonName != "b" {
		t.Fatalf("after the files changed: served %q, want b", got.Subject.CommonName)
	}

	// A key that does not match the certificate: keep serving b.
	certstest.WriteFile(t, keyFile, c.KeyPEM)
	if err := r.Check(); err == nil {
		t.Fatal("mismatched key loaded without error")
	}
	if got := servedLeaf(t, cfg, ca.Pool()); got.Subject.CommonName != "b" {
		t.Fatalf("after a failed load: served %q, want b still", got.Subject.CommonName)
	}
	// The operator finishes the rotation.
	certstest.WriteFile(t, certFile, c.CertPEM)
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	if got := servedLeaf(t, cfg, ca.Pool()); got.Subject.CommonName != "c" {
		t.Fatalf("after the rotation finished: served %q, want c", got.Subject.CommonName)
	}
	if len(reloads) != 3 || reloads[0] != nil || reloads[1] == nil || reloads[2] != nil {
		t.Errorf("OnReload saw %v, want [nil, error, nil]", reloads)
	}

	// A new client CA replaces the pool.
	other := certstest.NewCA(t, "other")
	certstest.WriteFile(t, clientCA, other.CertPEM)
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	leaf := other.Client(t, "alice")
	cert, _ := x509.ParseCertificate(leaf.TLS.Certificate[0])
	if _, err := cert.Verify(x509.VerifyOptions{Roots: r.ClientCAs(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("a client of the new CA does not verify against ClientCAs: %v", err)
	}
	if bytes.Equal(other.CertPEM, ca.CertPEM) {
		t.Fatal("test CAs are equal")
	}
}

func TestNewRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "ca")
	a, b := ca.Server(t, "a"), ca.Server(t, "b")
	certFile, _ := a.WriteFiles(t, dir, "a")
	_, bKey := b.WriteFiles(t, dir, "b")
	notPEM := filepath.Join(dir, "junk")
	certstest.WriteFile(t, notPEM, []byte("not a certificate\n"))
	for name, f := range map[string]certs.Files{
		"no key":            {CertFile: certFile},
		"missing cert":      {CertFile: filepath.Join(dir, "nope.crt"), KeyFile: bKey},
		"mismatched key":    {CertFile: certFile, KeyFile: bKey},
		"client CA not PEM": {CertFile: certFile, KeyFile: filepath.Join(dir, "a.key"), ClientCAFile: notPEM},
	} {
		if _, err := certs.New(f); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := certs.New(certs.Files{CertFile: certFile, KeyFile: filepath.Join(dir, "a.key")}); err != nil {
		t.Errorf("good pair: %v", err)
	}
}

// TestReloadAfterRotationFinishedDuringFailedLoad: a rotation written as
// two renames (key, then certificate) whose second rename lands while a
// reload of the half-rotated pair is failing is loaded at the next check,
// not lost until the files change again. OnReload runs right after the
// failed load, so it plays the operator's second rename there.
func TestReloadAfterRotationFinishedDuringFailedLoad(t *testing.T) {
	dir, _, b, r := servingA(t)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := true
	r.OnReload = func(err error) {
		if err != nil && first {
			first = false
			certstest.WriteFile(t, certFile, b.CertPEM) // the operator's second rename
		}
	}
	certstest.WriteFile(t, keyFile, b.KeyPEM) // the operator's first rename
	if err := r.Check(); err == nil {
		t.Fatal("half-rotated pair loaded")
	}
	// Both files now hold b, consistently. Every later check should load it.
	for range 3 {
		r.Check()
	}
	if got := r.Certificate().Leaf; got == nil || got.Subject.CommonName != "b" {
		name := "<nil>"
		if got != nil {
			name = got.Subject.CommonName
		}
		t.Fatalf("files hold b, served certificate is still %q: the finished rotation is never loaded", name)
	}
}

// TestReloadRetriesAfterRunningOutOfFDs: a rotation whose files the
// daemon could not read because it was out of file descriptors is loaded
// at the next check. The files are fine: only a pair that failed to load
// for its contents waits for the next change. Before, the new files'
// stamps were taken as seen, the old certificate was served until the
// next rotation, and it could expire meanwhile.
func TestReloadRetriesAfterRunningOutOfFDs(t *testing.T) {
	dir, ca, b, r := servingA(t)
	var reloads []error
	r.OnReload = func(err error) { reloads = append(reloads, err) }
	b.WriteFiles(t, dir, "tls")

	// No descriptor is left: the lowest free number is the limit.
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lowest := 0
	for ; ; lowest++ {
		if _, err := unix.FcntlInt(uintptr(lowest), unix.F_GETFD, 0); err != nil {
			break
		}
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(lowest), Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	err := r.Check()
	if rerr := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("Check out of file descriptors: got %v, want too many open files", err)
	}

	if err := r.Check(); err != nil {
		t.Fatalf("Check with descriptors free again: %v", err)
	}
	if got := servedLeaf(t, r.TLSConfig(), ca.Pool()); got.Subject.CommonName != "b" {
		t.Fatalf("served %q after the failed read, want the rotated b", got.Subject.CommonName)
	}
	if len(reloads) != 2 || reloads[0] == nil || reloads[1] != nil {
		t.Errorf("reloads reported: %v, want the failure then a success", reloads)
	}
}

// servingA returns a Reloader serving certificate a of ca from dir's
// tls.crt and tls.key, and b, another of ca's, to rotate to.
func servingA(t *testing.T) (dir string, ca *certstest.CA, b *certstest.Leaf, r *certs.Reloader) {
	t.Helper()
	dir = t.TempDir()
	ca = certstest.NewCA(t, "ca")
	a := ca.Server(t, "a")
	b = ca.Server(t, "b")
	certFile, keyFile := a.WriteFiles(t, dir, "tls")
	r, err := certs.New(certs.Files{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	return dir, ca, b, r
}

// TestMissingFileIsOneFailure: a file that goes missing (a Secret being
// replaced, an operator's rm) is one failed load, told once, not one at
// every check (every second while clients connect, each an ERROR line
// and a failure counted); the old pair is served meanwhile, and the file
// is loaded when it is back.
func TestMissingFileIsOneFailure(t *testing.T) {
	dir, ca, b, r := servingA(t)
	var reloads []error
	r.OnReload = func(err error) { reloads = append(reloads, err) }
	certFile := filepath.Join(dir, "tls.crt")
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		r.Check()
	}
	if len(reloads) != 1 || !errors.Is(reloads[0], fs.ErrNotExist) {
		t.Fatalf("reloads told for a missing certificate over 3 checks: %v, want one, not found", reloads)
	}
	if got := servedLeaf(t, r.TLSConfig(), ca.Pool()); got.Subject.CommonName != "a" {
		t.Fatalf("served %q with the file missing, want the old a", got.Subject.CommonName)
	}
	b.WriteFiles(t, dir, "tls")
	if err := r.Check(); err != nil {
		t.Fatalf("Check once the files are back: %v", err)
	}
	if got := servedLeaf(t, r.TLSConfig(), ca.Pool()); got.Subject.CommonName != "b" {
		t.Fatalf("served %q once the files are back, want b", got.Subject.CommonName)
	}
	if len(reloads) != 2 || reloads[1] != nil {
		t.Errorf("reloads told: %v, want the failure, then a success", reloads)
	}
}
