package auth

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"
)

// InCluster is the kubeconfig value that means the pod's service account:
// the API server from KUBERNETES_SERVICE_HOST and _PORT, the token and CA
// from /var/run/secrets/kubernetes.io/serviceaccount.
const InCluster = "in-cluster"

const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// kubeconfig is the part of a kubeconfig file the webhook uses.
type kubeconfig struct {
	CurrentContext string `json:"current-context"`
	Clusters       []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server                   string `json:"server"`
			CertificateAuthority     string `json:"certificate-authority"`
			CertificateAuthorityData string `json:"certificate-authority-data"`
			InsecureSkipTLSVerify    bool   `json:"insecure-skip-tls-verify"`
			TLSServerName            string `json:"tls-server-name"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			ClientCertificate     string `json:"client-certificate"`
			ClientCertificateData string `json:"client-certificate-data"`
			ClientKey             string `json:"client-key"`
			ClientKeyData         string `json:"client-key-data"`
			Token                 string `json:"token"`
			TokenFile             string `json:"tokenFile"`
			Exec                  any    `json:"exec"`
			AuthProvider          any    `json:"auth-provider"`
		} `json:"user"`
	} `json:"users"`
	Contexts []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
}

// NewWebhook returns a Webhook that reaches the API server described by
// the kubeconfig file at path (its current context), or by the pod's
// service account when path is InCluster.
func NewWebhook(path string) (*Webhook, error) {
	if path == InCluster {
		return inClusterWebhook(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"), serviceAccountDir)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	var clusterName, userName string
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			clusterName, userName = c.Context.Cluster, c.Context.User
		}
	}
	if clusterName == "" {
		return nil, fmt.Errorf("kubeconfig %s: current-context %q names no context with a cluster", path, kc.CurrentContext)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	server := ""
	for _, c := range kc.Clusters {
		if c.Name != clusterName {
			continue
		}
		server = c.Cluster.Server
		tc.ServerName = c.Cluster.TLSServerName
		tc.InsecureSkipVerify = c.Cluster.InsecureSkipTLSVerify
		pool, err := certPool(rel(c.Cluster.CertificateAuthority), c.Cluster.CertificateAuthorityData)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: cluster %q: %w", path, clusterName, err)
		}
		tc.RootCAs = pool
	}
	if server == "" {
		return nil, fmt.Errorf("kubeconfig %s: cluster %q has no server", path, clusterName)
	}
	w := &Webhook{server: trimSlash(server)}
	found := false
	for _, u := range kc.Users {
		if u.Name != userName {
			continue
		}
		found = true
		if u.User.Exec != nil || u.User.AuthProvider != nil {
			return nil, fmt.Errorf("kubeconfig %s: user %q: exec and auth-provider plugins are not supported (portforwardd never executes programs): use a client certificate, a token or a tokenFile", path, userName)
		}
		cert, err := clientCertificate(rel(u.User.ClientCertificate), u.User.ClientCertificateData, rel(u.User.ClientKey), u.User.ClientKeyData)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: user %q: %w", path, userName, err)
		}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		w.credential = readCredential(u.User.Token, rel(u.User.TokenFile), os.ReadFile)
	}
	if userName != "" && !found {
		// client-go refuses it too; going on would ask every review
		// anonymously and fail each request with the API server's 401.
		return nil, fmt.Errorf("kubeconfig %s: context %q names user %q, which is not in users", path, kc.CurrentContext, userName)
	}
	w.client = newClient(tc)
	return w, nil
}

func inClusterWebhook(host, port, saDir string) (*Webhook, error) {
	if host == "" || port == "" {
		return nil, errors.New("in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not running in a pod?)")
	}
	pool, err := certPool(filepath.Join(saDir, "ca.crt"), "")
	if err != nil {
		return nil, fmt.Errorf("in-cluster: %w", err)
	}
	tokenFile := filepath.Join(saDir, "token")
	if _, err := os.Stat(tokenFile); err != nil {
		return nil, fmt.Errorf("in-cluster: %w", err)
	}
	return &Webhook{
		server:     "https://" + net.JoinHostPort(host, port),
		client:     newClient(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}),
		credential: readCredential("", tokenFile, os.ReadFile),
	}, nil
}

func newClient(tc *tls.Config) *http.Client {
	return &http.Client{
		Timeout: webhookTimeout,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     tc,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		},
	}
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// certPool reads a CA bundle from a file or base64 data; nil, nil for
// neither (the system roots).
func certPool(file, data string) (*x509.CertPool, error) {
	pem, err := fileOrData(file, data)
	if err != nil || pem == nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("certificate authority: no PEM certificate")
	}
	return pool, nil
}

func clientCertificate(certFile, certData, keyFile, keyData string) (*tls.Certificate, error) {
	certPEM, err := fileOrData(certFile, certData)
	if err != nil {
		return nil, err
	}
	keyPEM, err := fileOrData(keyFile, keyData)
	if err != nil {
		return nil, err
	}
	if certPEM == nil && keyPEM == nil {
		return nil, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	return &cert, nil
}

func fileOrData(file, data string) ([]byte, error) {
	if data != "" {
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return nil, fmt.Errorf("decode base64 data: %w", err)
		}
		return b, nil
	}
	if file == "" {
		return nil, nil
	}
	return os.ReadFile(file)
}
