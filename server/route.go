package server

import (
	"net/url"
	"strings"

	"github.com/portforwardd/portforwardd/nsenter"
)

// parseTokenRoute matches /portforward/{token}, the single-use URLs the
// CRI proxy hands out.
func parseTokenRoute(escapedPath string) (string, bool) {
	token, ok := strings.CutPrefix(escapedPath, "/portforward/")
	if !ok || token == "" || strings.Contains(token, "/") {
		return "", false
	}
	return token, true
}

// parseRoute matches an escaped request path against
// /portForward/{namespace}/{pod}[/{uid}]. Segments are unescaped one by
// one, so an encoded slash cannot change the route's shape.
func parseRoute(escapedPath string) (nsenter.Pod, bool) {
	rest, ok := strings.CutPrefix(escapedPath, "/portForward/")
	if !ok {
		return nsenter.Pod{}, false
	}
	segs := strings.Split(rest, "/")
	if len(segs) < 2 || len(segs) > 3 {
		return nsenter.Pod{}, false
	}
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil || u == "" {
			return nsenter.Pod{}, false
		}
		segs[i] = u
	}
	pod := nsenter.Pod{Namespace: segs[0], Name: segs[1]}
	if len(segs) == 3 {
		pod.UID = segs[2]
	}
	return pod, true
}
