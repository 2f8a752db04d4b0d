// Command forward is the demo client of the README: it runs client-go's
// port-forward over SPDY, the code path `kubectl port-forward` runs, against
// portforwardd directly.
//
//	go run ./hack/forward [-server http://127.0.0.1:10350] NAMESPACE/POD [LOCAL:]REMOTE
//
// The full client CLI is cmd/portforward (see the README); this one exists
// to show the daemon working with Kubernetes' own client code.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

func main() {
	server := flag.String("server", "http://127.0.0.1:10350", "portforwardd's URL")
	flag.Parse()
	if flag.NArg() != 2 || !strings.Contains(flag.Arg(0), "/") {
		fmt.Fprintln(os.Stderr, "usage: forward [-server URL] NAMESPACE/POD [LOCAL:]REMOTE")
		os.Exit(2)
	}
	if err := run(*server, flag.Arg(0), flag.Arg(1)); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(server, pod, port string) error {
	base, err := url.Parse(server)
	if err != nil {
		return err
	}
	transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: server})
	if err != nil {
		return err
	}
	u := base.JoinPath("portForward", pod)
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	stop := make(chan struct{})
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	go func() { <-sigc; close(stop) }()
	pf, err := portforward.New(dialer, []string{port}, stop, nil, os.Stdout, os.Stderr)
	if err != nil {
		return err
	}
	return pf.ForwardPorts()
}
