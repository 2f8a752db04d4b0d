package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/portforwardd/portforwardd/server"
	"github.com/portforwardd/portforwardd/server/auth"
	"github.com/portforwardd/portforwardd/server/certs"
)

// checkSecurityFlags rejects flag combinations that would serve less
// securely than the operator asked for, or not at all.
func checkSecurityFlags(o options) error {
	hasTLS := o.tlsCertFile != "" || o.tlsKeyFile != ""
	switch {
	case (o.tlsCertFile == "") != (o.tlsKeyFile == ""):
		return errors.New("--tls-cert-file and --tls-private-key-file go together")
	case o.clientCAFile != "" && !hasTLS:
		return errors.New("--client-ca-file needs --tls-cert-file and --tls-private-key-file")
	case (len(o.allowedNames) > 0 || len(o.allowedGroups) > 0) && o.clientCAFile == "":
		return errors.New("--allowed-client-names and --allowed-client-groups need --client-ca-file")
	case (len(o.allowedNames) > 0 || len(o.allowedGroups) > 0) && o.authKubeconfig != "":
		return errors.New("--allowed-client-names and --allowed-client-groups apply without --auth-kubeconfig only (with it, SubjectAccessReview decides)")
	}
	if o.allowInsecureListen {
		return nil
	}
	// The metrics listener authenticates nobody: the kubelet serves its
	// profiles only to authorized users, so off loopback they need consent.
	// A socket passed as fd://NAME is checked once taken (checkListeners).
	_, metricsPassed := activatedName(o.metricsListen)
	if o.pprof && o.metricsListen != "" && !metricsPassed && !loopbackAddress(o.metricsListen) {
		return fmt.Errorf("--metrics-listen %s is not a loopback address and --pprof serves profiles to anyone who reaches it: move it to loopback, or pass --allow-insecure-listen to accept that", o.metricsListen)
	}
	if _, passed := activatedName(o.listen); passed || loopbackAddress(o.listen) {
		return nil
	}
	// Off loopback, TLS alone keeps nobody out: a listener that
	// authenticates nobody needs the same consent as one in clear text.
	switch {
	case !hasTLS:
		return fmt.Errorf("--listen %s is not a loopback address: serve it with --tls-cert-file and --tls-private-key-file (and --client-ca-file or --auth-kubeconfig), or pass --allow-insecure-listen to accept that anyone who reaches it can forward", o.listen)
	case o.clientCAFile == "" && o.authKubeconfig == "":
		return fmt.Errorf("--listen %s is not a loopback address and authenticates nobody: add --client-ca-file or --auth-kubeconfig, or pass --allow-insecure-listen to accept that anyone who reaches it can forward", o.listen)
	}
	return nil
}

// checkListeners runs checkSecurityFlags's checks of what the listeners
// expose on the addresses of the sockets passed as fd://NAME, which the
// flags do not give.
func checkListeners(o options, ln, mln net.Listener) error {
	_, lnPassed := activatedName(o.listen)
	_, mlnPassed := activatedName(o.metricsListen)
	if !lnPassed && !mlnPassed {
		return nil
	}
	o.listen = ln.Addr().String()
	if mln != nil {
		o.metricsListen = mln.Addr().String()
	}
	return checkSecurityFlags(o)
}

// loopbackAddress reports whether a host:port listens on loopback only.
func loopbackAddress(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// security is what the flags make of TLS and authentication.
type security struct {
	tls   *tls.Config
	certs *certs.Reloader
	auth  *auth.Authenticator
	mode  string // for the start-up log
}

func newSecurity(o options, m *server.Metrics, log *slog.Logger) (security, error) {
	var sec security
	var modes []string
	if o.tlsCertFile != "" {
		r, err := certs.New(certs.Files{CertFile: o.tlsCertFile, KeyFile: o.tlsKeyFile, ClientCAFile: o.clientCAFile})
		if err != nil {
			return sec, fmt.Errorf("--tls-cert-file, --tls-private-key-file, --client-ca-file: %w", err)
		}
		r.OnReload = func(err error) {
			m.TLSReloaded(err)
			if err != nil {
				log.Error("reloading TLS files failed; still serving the previous ones", "err", err)
				return
			}
			log.Info("reloaded TLS files", "cert", o.tlsCertFile, "client_ca", o.clientCAFile)
		}
		sec.certs, sec.tls = r, r.TLSConfig()
	}
	cfg := auth.Config{
		AllowedNames:  o.allowedNames,
		AllowedGroups: o.allowedGroups,
		CacheTTL:      o.authCacheTTL,
		OnDeny:        m.AuthDenied,
	}
	if o.clientCAFile != "" {
		cfg.ClientCAs = sec.certs.ClientCAs
		modes = append(modes, "x509")
	}
	if o.authKubeconfig != "" {
		w, err := auth.NewWebhook(o.authKubeconfig)
		if err != nil {
			return sec, fmt.Errorf("--auth-kubeconfig: %w", err)
		}
		cfg.Webhook = w
		cfg.NodeName = o.nodeName
		if cfg.NodeName == "" {
			host, err := os.Hostname()
			if err != nil {
				return sec, fmt.Errorf("--node-name not given and the host name is unknown: %w", err)
			}
			cfg.NodeName = strings.ToLower(host) // as the kubelet names its node
		}
		modes = append(modes, "webhook")
		if sec.tls == nil {
			log.Warn("bearer tokens will cross --listen in clear text: serve it with TLS", "listen", o.listen)
		}
	}
	if len(modes) > 0 {
		a, err := auth.New(cfg)
		if err != nil {
			return sec, err
		}
		sec.auth = a
		sec.mode = strings.Join(modes, "+")
	} else {
		sec.mode = "none"
	}
	return sec, nil
}
