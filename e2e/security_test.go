package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/client-go/rest"

	"github.com/portforwardd/portforwardd/server/auth/authtest"
	"github.com/portforwardd/portforwardd/server/certs/certstest"
)

// pki is a serving certificate and a client CA written to files, as an
// operator provisions them for the daemon.
type pki struct {
	dir                string
	serverCA, clientCA *certstest.CA
	certFile, keyFile  string
	caFile             string // the serving CA, for clients
	clientCAFile       string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), serverCA: certstest.NewCA(t, "serving-ca"), clientCA: certstest.NewCA(t, "client-ca")}
	p.certFile, p.keyFile = p.serverCA.Server(t, "portforwardd").WriteFiles(t, p.dir, "tls")
	p.caFile = filepath.Join(p.dir, "serving-ca.crt")
	certstest.WriteFile(t, p.caFile, p.serverCA.CertPEM)
	p.clientCAFile = filepath.Join(p.dir, "client-ca.crt")
	certstest.WriteFile(t, p.clientCAFile, p.clientCA.CertPEM)
	return p
}

// webhookKubeconfig writes the kubeconfig with which the daemon asks api
// for TokenReviews and SubjectAccessReviews, with its own token
// daemon-sa-token, and returns its path.
func (p *pki) webhookKubeconfig(t *testing.T, api *authtest.APIServer) string {
	t.Helper()
	certstest.WriteFile(t, filepath.Join(p.dir, "api-ca.crt"), pemEncode(api.Certificate()))
	kubeconfig := filepath.Join(p.dir, "kubeconfig")
	certstest.WriteFile(t, kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
current-context: node
clusters:
- name: c
  cluster: {server: %q, certificate-authority: api-ca.crt}
users:
- name: portforwardd
  user: {token: daemon-sa-token}
contexts:
- name: node
  context: {cluster: c, user: portforwardd}
`, api.URL)))
	return kubeconfig
}

func (p *pki) daemonArgs() []string {
	return []string{"--tls-cert-file", p.certFile, "--tls-private-key-file", p.keyFile, "--client-ca-file", p.clientCAFile}
}

// restConfig is what kubectl builds from a kubeconfig with this client
// certificate (nil: none) and token.
func (p *pki) restConfig(d *daemon, client *certstest.Leaf, token string) *rest.Config {
	cfg := &rest.Config{Host: "https://" + d.addr, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: p.serverCA.CertPEM}}
	if client != nil {
		cfg.CertData, cfg.KeyData = client.CertPEM, client.KeyPEM
	}
	return cfg
}

// httpsGet sends one upgrade-less request and returns the status and body.
func (p *pki) httpsGet(t *testing.T, d *daemon, path string, client *certstest.Leaf, header http.Header) (int, string) {
	t.Helper()
	tc := &tls.Config{RootCAs: p.serverCA.Pool()}
	if client != nil {
		tc.Certificates = []tls.Certificate{client.TLS}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodGet, "https://"+d.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// TestTLSClientCertificates: with --client-ca-file, kubectl's transports
// and the CLI's work with a client certificate over TLS (HTTP/2 chosen by
// ALPN), and requests without a trusted certificate get a 401 that says
// what is missing.
func TestTLSClientCertificates(t *testing.T) {
	pk := newPKI(t)
	d := startDaemon(t, append(pk.daemonArgs(), "--allowed-client-groups", "ops")...)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	alice := pk.clientCA.Client(t, "alice", "ops")
	cfg := pk.restConfig(d, alice, "")

	for name, dialer := range map[string]func() *forward{
		"spdy":      func() *forward { return startForwardWith(t, spdyDialerFor(t, cfg, p.route()), port(ln)) },
		"websocket": func() *forward { return startForwardWith(t, tunnelDialerFor(t, cfg, p.route()), port(ln)) },
	} {
		f := dialer()
		echoOnce(t, f.dial(t), "over TLS with "+name)
		f.close()
	}
	certFile, keyFile := alice.WriteFiles(t, pk.dir, "alice")
	for _, tr := range []struct{ flag, protocol string }{{"h2", "h2"}, {"raw", "raw"}} {
		c := startCLI(t, "--server", "https://"+d.addr, "--certificate-authority", pk.caFile,
			"--client-certificate", certFile, "--client-key", keyFile, "--transport", tr.flag,
			"-n", p.namespace, p.name, ":"+strconv.Itoa(port(ln)))
		local := c.expectForwarding(t, port(ln))
		conn, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(local))
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, conn.(*net.TCPConn), "CLI over TLS with "+tr.flag)
		conn.Close()
		eventually(t, 10*time.Second, func() (bool, string) {
			got := d.metric(t, fmt.Sprintf(`portforwardd_streams_total{protocol=%q,result="ok"}`, tr.protocol)) +
				d.metric(t, fmt.Sprintf(`portforwardd_streams_active{protocol=%q}`, tr.protocol))
			return got >= 1, fmt.Sprintf("no %s forward counted: the CLI did not use %s over TLS", tr.protocol, tr.flag)
		})
		c.cmd.Process.Kill()
	}
	// Each session's lines name who was authorized for it, at info: an
	// audit trail of who reached which pod.
	eventually(t, 10*time.Second, func() (bool, string) {
		users := map[string]any{}
		for _, l := range d.logLines() {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "session started" && rec["level"] == "INFO" {
				users[fmt.Sprint(rec["protocol"])] = rec["user"]
			}
		}
		for _, protocol := range []string{"spdy", "spdy_websocket", "h2", "raw"} {
			if users[protocol] != "alice" {
				return false, fmt.Sprintf("users on the session started lines, by protocol: %v; want alice on each of spdy, spdy_websocket, h2, raw", users)
			}
		}
		return true, ""
	})

	rogue := certstest.NewCA(t, "rogue").Client(t, "mallory", "ops")
	bob := pk.clientCA.Client(t, "bob", "dev")
	for _, tc := range []struct {
		name   string
		client *certstest.Leaf
		status int
		body   string
		reason string
	}{
		{"no certificate", nil, 401, "Unauthorized: authentication required: present a client certificate signed by the client CA", "no_credentials"},
		{"untrusted certificate", rogue, 401, "Unauthorized: client certificate not trusted: x509: certificate signed by unknown authority", "bad_certificate"},
		{"not in the allowed groups", bob, 403, "Forbidden (user=bob, verb=create, resource=nodes, subresource(s)=[proxy])", "not_allowed"},
	} {
		status, body := pk.httpsGet(t, d, p.route()+"?port=80", tc.client, http.Header{"X-Secret": {"do-not-echo"}})
		if status != tc.status || body != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.name, status, body, tc.status, tc.body)
		}
		if got := d.metric(t, fmt.Sprintf(`portforwardd_auth_denials_total{reason=%q}`, tc.reason)); got != 1 {
			t.Errorf("%s: auth_denials_total{reason=%q} = %v, want 1", tc.name, tc.reason, got)
		}
	}
	// A client that does not speak TLS gets Go's plain-text 400, nothing
	// forwarded.
	resp, _ := rawRequest(t, d.addr, "GET "+p.route()+" HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS port: %d, want 400", resp.StatusCode)
	}
}

// TestTLSCertificateReload: new certificate files are served without a
// restart; a broken pair is refused and the previous one kept.
func TestTLSCertificateReload(t *testing.T) {
	pk := newPKI(t)
	d := startDaemon(t, pk.daemonArgs()...)
	served := func() string {
		c, err := tls.Dial("tcp", d.addr, &tls.Config{RootCAs: pk.serverCA.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "portforwardd" {
		t.Fatalf("served %q", cn)
	}
	pk.serverCA.Server(t, "rotated").WriteFiles(t, pk.dir, "tls")
	eventually(t, 15*time.Second, func() (bool, string) {
		cn := served()
		return cn == "rotated", "still serving " + cn
	})
	if got := d.metric(t, `portforwardd_tls_reloads_total{result="success"}`); got != 1 {
		t.Errorf("tls_reloads_total{success} = %v, want 1", got)
	}
	if got := d.metric(t, `portforwardd_tls_reload_failing`); got != 0 {
		t.Errorf("tls_reload_failing = %v with the rotated files served, want 0", got)
	}
	// Half a rotation: a key that does not match.
	other := pk.serverCA.Server(t, "other")
	certstest.WriteFile(t, pk.keyFile, other.KeyPEM)
	eventually(t, 15*time.Second, func() (bool, string) {
		served() // a handshake looks at the files (at most once a second)
		n := d.metric(t, `portforwardd_tls_reloads_total{result="failure"}`)
		return n >= 1, "no failed reload counted"
	})
	if cn := served(); cn != "rotated" {
		t.Errorf("after a failed reload: served %q, want the previous certificate", cn)
	}
	if got := d.metric(t, `portforwardd_tls_reload_failing`); got != 1 {
		t.Errorf("tls_reload_failing = %v while the files on disk do not load, want 1", got)
	}
	// The rotation finished: the key matches again.
	other.WriteFiles(t, pk.dir, "tls")
	eventually(t, 15*time.Second, func() (bool, string) {
		cn := served()
		return cn == "other" && d.metric(t, `portforwardd_tls_reload_failing`) == 0,
			fmt.Sprintf("serving %q, tls_reload_failing %v", cn, d.metric(t, `portforwardd_tls_reload_failing`))
	})
	// The process is still healthy.
	resp, err := scrapeClient.Get("http://" + d.metricsAddr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestWebhookAuthentication: with --auth-kubeconfig, a bearer token is
// checked with a TokenReview and the user authorized with a
// SubjectAccessReview for create on nodes/proxy of --node-name, through
// the API server the kubeconfig names; client-go's own bearer-token
// transport is the client.
func TestWebhookAuthentication(t *testing.T) {
	pk := newPKI(t)
	api := authtest.New(t, "daemon-sa-token")
	api.AddToken("alice-token", authenticationv1.UserInfo{Username: "alice", Groups: []string{"system:authenticated"}})
	api.AddToken("bob-token", authenticationv1.UserInfo{Username: "bob"})
	api.Allow("alice")
	kubeconfig := pk.webhookKubeconfig(t, api)
	d := startDaemon(t, "--tls-cert-file", pk.certFile, "--tls-private-key-file", pk.keyFile,
		"--auth-kubeconfig", kubeconfig, "--node-name", "node-7")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)

	f := startForwardWith(t, spdyDialerFor(t, pk.restConfig(d, nil, "alice-token"), p.route()), port(ln))
	echoOnce(t, f.dial(t), "with a bearer token")
	f.close()
	reviews := api.Reviews()
	if len(reviews) != 1 || reviews[0].User != "alice" || reviews[0].ResourceAttributes.Name != "node-7" ||
		reviews[0].ResourceAttributes.Verb != "create" || reviews[0].ResourceAttributes.Subresource != "proxy" {
		t.Errorf("SubjectAccessReviews %+v", reviews)
	}
	for _, tc := range []struct {
		token  string
		status int
		body   string
	}{
		{"bob-token", 403, "Forbidden (user=bob, verb=create, resource=nodes, subresource(s)=[proxy])"},
		{"forged", 401, "Unauthorized: invalid bearer token"},
		{"", 401, "Unauthorized: authentication required: present a bearer token"},
	} {
		h := http.Header{}
		if tc.token != "" {
			h.Set("Authorization", "Bearer "+tc.token)
		}
		if status, body := pk.httpsGet(t, d, p.route(), nil, h); status != tc.status || body != tc.body {
			t.Errorf("token %q: %d %q, want %d %q", tc.token, status, body, tc.status, tc.body)
		}
	}
	// A WebSocket client that cannot set headers gives the token as a
	// subprotocol, as the kubelet accepts it; the daemon answers with the
	// channel protocol, never the token's.
	u := url.URL{Scheme: "wss", Host: d.addr, Path: p.route(), RawQuery: "port=" + strconv.Itoa(port(ln))}
	dialer := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pk.serverCA.Pool()}, HandshakeTimeout: 10 * time.Second,
		Subprotocols: []string{"v4.channel.k8s.io", "base64url.bearer.authorization.k8s.io." + base64.RawURLEncoding.EncodeToString([]byte("alice-token"))}}
	ws, resp, err := dialer.Dial(u.String(), nil)
	if err != nil {
		t.Fatalf("v4 WebSocket with the token as a subprotocol: %v (%v)", err, resp)
	}
	v4 := &v4Client{t: t, ws: ws}
	if ws.Subprotocol() != "v4.channel.k8s.io" {
		t.Errorf("answered subprotocol %q, want v4.channel.k8s.io", ws.Subprotocol())
	}
	v4.expectPrefixes(port(ln))
	v4.write(0, []byte("ping"))
	if got := v4.readData(0, 4); got != "ping" {
		t.Errorf("echo through the v4 WebSocket: %q", got)
	}
	ws.Close()

	// The CLI's --token reaches the same check.
	c := startCLI(t, "--server", "https://"+d.addr, "--certificate-authority", pk.caFile, "--token", "alice-token",
		"--transport", "raw", "-n", p.namespace, p.name, ":"+strconv.Itoa(port(ln)))
	local := c.expectForwarding(t, port(ln))
	conn, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(local))
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, conn.(*net.TCPConn), "CLI with --token")
	conn.Close()
}

// TestInsecureListenRefused: a non-loopback --listen without TLS is a
// start-up error unless --allow-insecure-listen says so.
func TestInsecureListenRefused(t *testing.T) {
	requireE2E(t)
	out, err := exec.Command(daemonBin, "--listen", "0.0.0.0:0", "--metrics-listen", "").CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "--listen 0.0.0.0:0 is not a loopback address") {
		t.Fatalf("exit %d, output %q; want 2 and the refusal", code, out)
	}
	d := startDaemon(t, "--listen", "0.0.0.0:0", "--allow-insecure-listen")
	if !strings.Contains(strings.Join(d.logLines(), "\n"), "authenticates nobody") {
		t.Error("no warning logged for an unauthenticated non-loopback listener")
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func pemEncode(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// TestCLITokenFileIsReadAgain: with --token-file, raw and h2, which send
// the token on every connection, send the file's token as it is when the
// connection is made: a service account token rotated in the file is
// used from the next connection on, where a --token that expired fails
// every connection after it.
func TestCLITokenFileIsReadAgain(t *testing.T) {
	pk := newPKI(t)
	api := authtest.New(t, "daemon-sa-token")
	api.AddToken("alice-token", authenticationv1.UserInfo{Username: "alice"})
	api.AddToken("carol-token-rotated", authenticationv1.UserInfo{Username: "carol"})
	api.Allow("alice")
	api.Allow("carol")
	d := startDaemon(t, "--tls-cert-file", pk.certFile, "--tls-private-key-file", pk.keyFile,
		"--auth-kubeconfig", pk.webhookKubeconfig(t, api), "--node-name", "node-7")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	for _, transport := range []string{"raw", "h2"} {
		t.Run(transport, func(t *testing.T) {
			tokenFile := filepath.Join(t.TempDir(), "token")
			certstest.WriteFile(t, tokenFile, []byte("alice-token\n"))
			c := startCLI(t, "--server", "https://"+d.addr, "--certificate-authority", pk.caFile, "--token-file", tokenFile,
				"--transport", transport, "-n", p.namespace, p.name, ":"+strconv.Itoa(port(ln)))
			local := c.expectForwarding(t, port(ln))
			users := func() []string {
				var u []string
				for _, r := range d.records() {
					if r.Msg == "session started" && r.Protocol == transport {
						u = append(u, r.User)
					}
				}
				return u
			}
			forward := func(want string) {
				t.Helper()
				conn, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(local))
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				echoOnce(t, conn.(*net.TCPConn), "as "+want)
				eventually(t, 10*time.Second, func() (bool, string) {
					u := users()
					return len(u) > 0 && u[len(u)-1] == want, fmt.Sprintf("sessions' users %q, want the last %s", u, want)
				})
			}
			forward("alice")
			certstest.WriteFile(t, tokenFile, []byte("carol-token-rotated\n"))
			forward("carol")
		})
	}
}
