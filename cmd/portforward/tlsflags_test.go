package main

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/portforwardd/portforwardd/server"
	"github.com/portforwardd/portforwardd/server/certs/certstest"
)

// TestClientCertificateFlags: --client-certificate without --client-key
// (or the other way round) is an error, as kubectl's "client-key-data or
// client-key must be specified"; client-go ignored the lone file, so the
// server was asked without a certificate and its refusal (401, a failed
// handshake) blamed a certificate the user had given. A pair that does
// not load is one "error: …" line too, whatever the transport (the probe's
// transport logged a klog line of its own before it). Both are found
// before the server is contacted.
func TestClientCertificateFlags(t *testing.T) {
	ca := certstest.NewCA(t, "ca")
	dir := t.TempDir()
	certFile, keyFile := ca.Client(t, "alice").WriteFiles(t, dir, "alice")
	_, otherKey := ca.Client(t, "bob").WriteFiles(t, dir, "bob")

	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(server.HeaderTransports, "connect-tcp, h2")
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "server").TLS},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := dir + "/ca.crt"
	certstest.WriteFile(t, caFile, ca.CertPEM)

	for _, transport := range []string{"auto", "spdy", "websocket", "raw", "h2"} {
		args := func(tls ...string) []string {
			return append(append([]string{"--server", srv.URL, "--certificate-authority", caFile, "--transport", transport,
				"--address", "127.0.0.1"}, tls...), "pod", ":80")
		}
		if transport != "spdy" && transport != "websocket" { // the server speaks neither
			t.Run(transport+"/pair", func(t *testing.T) {
				// The control: the pair reaches the server, which lets it in.
				c := startCLI(t, args("--client-certificate", certFile, "--client-key", keyFile)...)
				c.localPort(t)
			})
		}
		for _, tt := range []struct {
			name, want string
			flags      []string
		}{
			{"certificate without key", "--client-key is needed too", []string{"--client-certificate", certFile}},
			{"key without certificate", "--client-certificate is needed too", []string{"--client-key", keyFile}},
			{"key of another certificate", "private key does not match public key", []string{"--client-certificate", certFile, "--client-key", otherKey}},
		} {
			t.Run(transport+"/"+tt.name, func(t *testing.T) {
				before := conns.Load()
				// A process of its own: client-go logs with klog to the
				// process's stderr.
				c, _ := startCLIProcess(t, args(tt.flags...)...)
				if code := c.exitCode(t, tt.name); code != 1 {
					t.Fatalf("exit code %d, want 1; stdout %q, stderr %q", code, c.stdout, c.stderr)
				}
				stderr := c.stderr.String()
				if l := lines(stderr); len(l) != 1 || !strings.HasPrefix(l[0], "error: ") || !strings.Contains(l[0], tt.want) {
					t.Errorf("stderr %q, want one line \"error: …%s…\"", stderr, tt.want)
				}
				if n := conns.Load() - before; n != 0 {
					t.Errorf("the server was connected to %d times, want 0", n)
				}
			})
		}
	}
}
