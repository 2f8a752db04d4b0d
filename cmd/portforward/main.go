// Command portforward forwards local ports to a pod through portforwardd,
// with the argument syntax and output of `kubectl port-forward`:
//
//	portforward [flags] [-n NAMESPACE] POD [LOCAL_PORT:]REMOTE_PORT [...]
//
// It runs client-go's port-forward, the code kubectl runs, so it prints
// the same lines ("Forwarding from 127.0.0.1:5000 -> 5000", "Handling
// connection for 5000") and behaves the same way on errors, but for one:
// an error on one forwarded connection (nothing listens on the pod's
// port) fails that connection only, unless the pod is gone, where kubectl
// ends them all. It exits 0 on SIGINT or SIGTERM and 1 when anything
// fails, including losing the pod ("lost connection to pod").
//
// The spdy and websocket transports hold one connection to the server and
// lose the pod when it closes. After a forwarded connection's error they
// ask the server (OPTIONS) whether the pod still exists, and lose it if
// not, or if the error said the pod's network namespace is gone (the
// session is bound to the pod it was opened for, and a pod created again
// under its name is another); a server that does not answer as
// portforwardd does (a kubelet, an API server) loses it there, as kubectl
// does. raw and h2 watch no connection: they notice a server that can no
// longer be reached (a dial that fails) or a pod that no longer exists
// (404) at the next local connection, which fails with "an error occurred
// forwarding L -> R: …"; the CLI then stops listening and exits once the
// connections under way are done. Other HTTP errors (503: the server is
// at its limits, or draining), and a dial that fails for want of a local
// resource (EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS, ENOMEM; on Windows
// Winsock's WSAEMFILE, WSAEADDRNOTAVAIL, WSAENOBUFS and
// WSA_NOT_ENOUGH_MEMORY), fail only that connection; a listener whose
// accept fails (out of descriptors or memory, or for any reason but its
// close) says so once and accepts again when it can. With
// raw, a local client's reset resets its connection to the server. With
// h2, a stream the server refused unprocessed (a draining daemon's GOAWAY
// crossed it) is sent again on a new connection, with what its local
// client had sent on it (up to 256 KiB).
//
// An https --server is verified with --certificate-authority, or else with
// the system's roots, whatever the transport. The bearer token is --token,
// or --token-file, read again when the file changes: raw and h2 send it
// with every connection, so a rotated service account token is taken from
// the next one on. raw and h2 go through no
// proxy: when the environment names one for the server, auto takes the
// tunnel (or SPDY), which go through it, as kubectl's do.
package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/klog/v2"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/portforwardd/portforwardd/cmd/internal/buildinfo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, interrupts()))
}

func interrupts() <-chan struct{} {
	stop := make(chan struct{})
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigc
		close(stop)
	}()
	return stop
}

type options struct {
	server, namespace, transport string
	addresses                    []string
	caFile, certFile, keyFile    string
	insecure                     bool
	token, tokenFile             string
	showVersion                  bool
	pod                          string
	ports                        []string
}

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

const usage = "usage: portforward [flags] [-n NAMESPACE] POD [LOCAL_PORT:]REMOTE_PORT [...]"

func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := newFlagSet(&o)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.showVersion {
		return o, nil
	}
	if fs.NArg() < 2 {
		return o, errors.New("a pod and at least one port are required; " + usage)
	}
	pod := fs.Arg(0)
	if kind, name, ok := strings.Cut(pod, "/"); ok {
		if strings.Contains(name, "/") {
			return o, errors.New("arguments in resource/name form may not have more than one slash") // kubectl's text
		}
		// Any case, as kubectl's REST mapper matches resource types.
		if kind := strings.ToLower(kind); kind != "pod" && kind != "pods" && kind != "po" {
			return o, fmt.Errorf("%q: only pods can be forwarded to (pod/NAME or NAME)", pod)
		}
		pod = name
	}
	if pod == "" {
		return o, errors.New("the pod name is empty")
	}
	o.pod, o.ports = pod, fs.Args()[1:]
	if err := checkRemotePorts(o.ports); err != nil {
		return o, err
	}
	return o, nil
}

// printUsage writes the usage line and the flags, as -h and --help do (to
// standard output, as kubectl does, so that it pages).
func printUsage(w io.Writer) {
	fs := newFlagSet(&options{})
	fs.SetOutput(w)
	fmt.Fprintln(w, usage)
	fs.PrintDefaults()
}

// newFlagSet defines the flags into o. -h and --help make Parse return
// pflag.ErrHelp and print nothing.
func newFlagSet(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("portforward", pflag.ContinueOnError)
	fs.Usage = func() {}
	fs.StringVar(&o.server, "server", "http://127.0.0.1:10350", "portforwardd's URL")
	fs.StringVarP(&o.namespace, "namespace", "n", "default", "the pod's namespace")
	fs.StringSliceVar(&o.addresses, "address", []string{"localhost"}, "addresses to listen on (comma-separated); localhost means 127.0.0.1 and ::1")
	fs.StringVar(&o.transport, "transport", "auto", "auto (the best the server offers: raw from portforwardd; from a kubelet or API server the WebSocket tunnel, falling back to SPDY), spdy, websocket (the tunnel only), h2 (one HTTP/2 stream per connection), or raw (one connect-tcp upgrade per connection, spliced)")
	fs.StringVar(&o.caFile, "certificate-authority", "", "CA file to verify the server's certificate (default: the system's roots)")
	fs.StringVar(&o.certFile, "client-certificate", "", "client certificate file for TLS")
	fs.StringVar(&o.keyFile, "client-key", "", "client key file for TLS")
	fs.BoolVar(&o.insecure, "insecure-skip-tls-verify", false, "do not verify the server's certificate")
	fs.StringVar(&o.token, "token", "", "bearer token for the server (checked by its --auth-kubeconfig TokenReview)")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the bearer token, read again when it changes (a rotated service account token), as kubeconfig's tokenFile")
	return fs
}

func run(args []string, stdout, stderr io.Writer, stop <-chan struct{}) int {
	o, err := parseArgs(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		printUsage(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	if o.showVersion {
		fmt.Fprintln(stdout, "portforward", buildinfo.Version(version))
		return 0
	}
	if err := forward(o, stdout, stderr, stop); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	return 0
}

func forward(o options, stdout, stderr io.Writer, stop <-chan struct{}) error {
	base, err := url.Parse(o.server)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("--server %q: want http://HOST:PORT or https://HOST:PORT", o.server)
	}
	if err := checkClientCertificate(o.certFile, o.keyFile); err != nil {
		return err
	}
	if o.token != "" && o.tokenFile != "" {
		return errors.New("--token and --token-file: give one")
	}
	var bearer func() (string, error)
	if o.token != "" {
		bearer = func() (string, error) { return o.token, nil }
	}
	if o.tokenFile != "" {
		tf, err := newTokenFile(o.tokenFile)
		if err != nil {
			return err
		}
		bearer = tf.get
	}
	cfg := &rest.Config{Host: o.server, TLSClientConfig: rest.TLSClientConfig{
		CAFile: o.caFile, CertFile: o.certFile, KeyFile: o.keyFile, Insecure: o.insecure,
	}, BearerToken: o.token, BearerTokenFile: o.tokenFile}
	if o.transport == "auto" || o.transport == "raw" || o.transport == "h2" {
		// Bad input is reported before the server is asked anything.
		if _, err := parseAddresses(o.addresses); err != nil {
			return err
		}
		if _, err := parsePortSpecs(o.ports); err != nil {
			return err
		}
		// raw and h2 dial the server themselves, and through no proxy:
		// behind one, auto takes kubectl's path, whose transports go
		// through it, and raw or h2 asked for by name is refused.
		proxy, err := http.ProxyFromEnvironment(&http.Request{URL: base})
		if err != nil {
			return fmt.Errorf("the proxy for %s from the environment: %w", o.server, err)
		}
		if proxy != nil && o.transport != "auto" {
			return fmt.Errorf("--transport %s: the server is reached through the proxy %s (HTTPS_PROXY or HTTP_PROXY), which %s does not use; take auto, websocket or spdy, or name the server in NO_PROXY",
				o.transport, proxy.Redacted(), o.transport)
		}
		// raw and h2 would otherwise notice a server that is down, or a
		// pod that does not exist, only at the first local connection:
		// the probe fails before any listener opens, as for auto.
		ctx := wait.ContextForChannel(stop) // SIGINT ends the probe
		best, err := probeTransport(ctx, cfg, base, o.namespace, o.pod)
		if ctx.Err() != nil {
			return nil
		}
		if o.transport == "auto" && errors.As(err, new(*forbiddenError)) {
			err = nil // perhaps a kubelet, which forbids OPTIONS: kubectl's path
		}
		if err != nil {
			return err
		}
		if o.transport == "auto" && best != "" && proxy == nil {
			o.transport = best
		}
	}
	if o.transport == "raw" || o.transport == "h2" {
		return rawForward(o, base, cfg, bearer, stdout, stderr, stop, o.transport == "h2")
	}
	u := podURL(base, o.namespace, o.pod)
	inner, err := newDialer(o.transport, cfg, u)
	if err != nil {
		return err
	}
	dialer := &keepDialer{Dialer: inner, podExists: func() bool {
		best, err := probeTransport(wait.ContextForChannel(stop), cfg, base, o.namespace, o.pod)
		return err == nil && best != ""
	}}
	defer dialer.closeConn()
	// Until the listeners are up, client-go's messages are collected so
	// that a failure is reported as one line.
	early := &bytes.Buffer{}
	errOut := &switchWriter{w: early}
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreaming(dialer, o.addresses, o.ports, stop, ready, stdout, errOut)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- pf.ForwardPorts() }()
	select {
	case <-stop:
		return nil // the dial may be waiting for an answer that never comes
	case <-ready:
		errOut.set(stderr, early)
	case err := <-done:
		return withEarly(err, early)
	}
	err = <-done
	if err != nil {
		// The error is the last line: client-go's goroutines of local
		// connections still open ("Error creating error stream" on the
		// connection it has just closed) say nothing after it.
		klog.SetOutput(io.Discard)
		klog.LogToStderr(false)
	}
	return err
}

// checkClientCertificate fails unless --client-certificate and
// --client-key are both empty, or name a pair that loads. client-go
// ignores one without the other, so the server was asked with no
// certificate and its refusal blamed one the user gave (kubectl refuses
// it: "client-key-data or client-key must be specified"); and it loads a
// pair at each connection, where a bad one was logged by client-go on a
// line of its own before the error.
func checkClientCertificate(certFile, keyFile string) error {
	switch {
	case certFile == "" && keyFile == "":
		return nil
	case keyFile == "":
		return fmt.Errorf("--client-certificate %s: --client-key is needed too", certFile)
	case certFile == "":
		return fmt.Errorf("--client-key %s: --client-certificate is needed too", keyFile)
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		return fmt.Errorf("--client-certificate %s, --client-key %s: %w", certFile, keyFile, err)
	}
	return nil
}

func newDialer(transport string, cfg *rest.Config, u *url.URL) (streamhttp.Dialer, error) {
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	spdyDialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	switch transport {
	case "spdy":
		return spdyDialer, nil
	case "websocket", "tunnel", "auto":
		tunnel, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, cfg)
		if err != nil {
			return nil, err
		}
		if transport != "auto" {
			return tunnel, nil
		}
		// What kubectl ≥ 1.31 does: the tunnel first, SPDY when the
		// server refuses the WebSocket upgrade.
		return portforward.NewFallbackDialerForStreaming(tunnel, spdyDialer, func(err error) bool {
			return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
		}), nil
	default:
		return nil, fmt.Errorf("--transport %q: want auto, spdy, websocket, h2 or raw", transport)
	}
}

// podURL is the daemon's URL for a pod: base's path, then
// /portForward/NAMESPACE/POD with both names escaped, so that whatever they
// hold ("/", "%") the server looks up exactly the pod named (and refuses a
// name that is not one).
func podURL(base *url.URL, namespace, pod string) *url.URL {
	u := *base
	u.RawQuery, u.Fragment = "", ""
	escaped := strings.TrimSuffix(base.EscapedPath(), "/") + "/portForward/" + url.PathEscape(namespace) + "/" + url.PathEscape(pod)
	u.RawPath = escaped
	u.Path, _ = url.PathUnescape(escaped) // PathEscape's output always unescapes
	return &u
}

// withEarly adds to err, if not nil, the first line of what was written
// to stderr before the failure (client-go's "Unable to listen on port N:
// …" that explains "unable to listen on any of the requested ports"), so
// that the failure is one line.
func withEarly(err error, early *bytes.Buffer) error {
	if msg := strings.TrimSpace(early.String()); msg != "" && err != nil {
		return fmt.Errorf("%v (%s)", err, firstLine(msg))
	}
	return err
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// switchWriter writes to one writer and can be switched to another.
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// set switches to w, first copying what was collected in from.
func (s *switchWriter) set(w io.Writer, from *bytes.Buffer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	io.Copy(w, from)
	s.w = w
}
