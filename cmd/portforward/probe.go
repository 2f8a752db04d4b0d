package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// forbiddenError is a 403 answer to the probe. portforwardd authorizes
// OPTIONS as the forward it asks about ("create" on nodes/proxy), but a
// kubelet authorizes it with an empty verb, which it refuses to users
// allowed to forward: auto then takes kubectl's path, whose own request
// is authorized (and refused, if it is, with the same text).
type forbiddenError struct{ msg string }

func (e *forbiddenError) Error() string { return e.msg }

// headerTransports is the header in which portforwardd lists, in its
// answer to OPTIONS on a pod's route, the transports it offers, best
// first (server.HeaderTransports).
const headerTransports = "Portforwardd-Transports"

// probeTransport asks the server, with OPTIONS on the pod's route, which
// transports it offers, and returns the best this client speaks: "raw"
// (connect-tcp: spliced in the kernel on both hops, no framing) or "h2";
// "" when the server does not say (a kubelet or an API server), so the
// caller takes kubectl's path. An unknown pod or refused credentials are
// errors, as the first connection would report them; a refusal by
// authorization (403) is a *forbiddenError. Cancelling ctx ends
// the request.
func probeTransport(ctx context.Context, cfg *rest.Config, base *url.URL, namespace, pod string) (string, error) {
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return "", err
	}
	client.Timeout = 30 * time.Second
	u := podURL(base, namespace, pod)
	req, err := http.NewRequestWithContext(ctx, http.MethodOptions, u.String(), nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		// Not net/http's `Options "URL": …`: the user asked for no
		// OPTIONS, and the URL is more than the server they named.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("cannot reach the server %s: %w", base.Redacted(), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusNotFound && strings.TrimSpace(string(body)) == "pod does not exist",
		resp.StatusCode == http.StatusUnauthorized:
		return "", fmt.Errorf("%s", strings.TrimSpace(string(body)))
	case resp.StatusCode == http.StatusForbidden:
		return "", &forbiddenError{strings.TrimSpace(string(body))}
	default:
		return "", nil // not portforwardd, or it refuses OPTIONS: the Kubernetes path
	}
	for t := range strings.SplitSeq(resp.Header.Get(headerTransports), ",") {
		switch strings.TrimSpace(t) {
		case "connect-tcp":
			return "raw", nil
		case "h2":
			return "h2", nil
		}
	}
	return "", nil
}
