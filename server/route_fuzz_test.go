package server

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portforwardd/portforwardd/nsenter"
)

// escapeAll percent-encodes every byte of s: the most escaped spelling of a
// path segment.
func escapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

// FuzzParseRoute checks the two routes on arbitrary escaped paths: they
// never both match; a pod route re-renders (every byte escaped) to a path
// that parses to the same pod, so escaping cannot change which pod a
// request names; a pod that then validates resolves to a file directly in
// the netns directory; a token route is exactly /portforward/{token}.
func FuzzParseRoute(f *testing.F) {
	// The kubelet's forms (what the API server proxies to), client-go's
	// escaping, the CRI proxy's URLs, and near misses.
	for _, p := range []string{
		"/portForward/default/web",
		"/portForward/kube-system/coredns-5d78c9869d-abcde/3f1b3c55-64b2-4b9a-9c1e-6f0f2f6d8b11",
		"/portForward/a%2Db/c",
		"/portForward/a%2Fb/c",
		"/portForward/..%2F..%2Fetc/passwd",
		"/portForward/default/web/",
		"/portForward//web",
		"/portforward/AbCd_-12",
		"/portforward/",
		"/portforward/a/b",
		"/portForward/%zz/web",
		"/portForward/default/web%00",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		pod, ok := parseRoute(path)
		token, isToken := parseTokenRoute(path)
		if ok && isToken {
			t.Fatalf("%q is both pod %+v and token %q", path, pod, token)
		}
		if isToken && (token == "" || strings.Contains(token, "/") || "/portforward/"+token != path) {
			t.Fatalf("parseTokenRoute(%q) = %q", path, token)
		}
		if !ok {
			return
		}
		if pod.Namespace == "" || pod.Name == "" || !strings.HasPrefix(path, "/portForward/") {
			t.Fatalf("parseRoute(%q) = %+v", path, pod)
		}
		re := "/portForward/" + escapeAll(pod.Namespace) + "/" + escapeAll(pod.Name)
		if pod.UID != "" {
			re += "/" + escapeAll(pod.UID)
		}
		if again, ok := parseRoute(re); !ok || again != pod {
			t.Fatalf("parseRoute(%q) = %+v, but its re-rendering %q parses to %+v, %v", path, pod, re, again, ok)
		}
		if pod.Validate() != nil {
			return
		}
		const dir = "/run/netns"
		file := nsenter.DirResolver{Dir: dir}.Path(pod)
		if filepath.Dir(file) != dir || filepath.Base(file) != pod.Namespace+"_"+pod.Name {
			t.Fatalf("parseRoute(%q) = %+v validates, but resolves to %q, outside %s or renamed", path, pod, file, dir)
		}
	})
}
