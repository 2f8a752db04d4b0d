package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/tools/portforward"
	netutils "k8s.io/utils/net"

	"github.com/portforwardd/portforwardd/nsenter"
	"github.com/portforwardd/portforwardd/server"
)

// FuzzParsePortSpecs checks the raw and h2 transports' port parser against
// client-go's (what the SPDY and WebSocket transports, and kubectl, use):
// the same pairs or the same error text. Accepted remote ports are
// 1..65535, and pairs re-render to LOCAL:REMOTE specs that parse to them
// again. The input is one spec per line.
func FuzzParsePortSpecs(f *testing.F) {
	for _, s := range []string{
		"5000", "6000:5000", ":5000", "0:5000", "8080\n9090:90", // kubectl's forms
		"5000:", "0", "65536", "-1", "a:b", "1:2:3", "+80", "080:0080", " 80", "",
		"5000:65536", "5000:70000", "65535:65535", // a remote port past 16 bits is refused, not truncated
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, list string) {
		specs := strings.Split(list, "\n")
		got, err := parsePortSpecs(specs)
		ready := make(chan struct{})
		close(ready)
		pf, cerr := portforward.NewOnAddresses(nil, []string{"localhost"}, specs, nil, ready, io.Discard, io.Discard)
		if (err == nil) != (cerr == nil) || err != nil && err.Error() != cerr.Error() {
			t.Fatalf("parsePortSpecs(%q): %v; client-go: %v", specs, err, cerr)
		}
		if err != nil {
			return
		}
		want, err := pf.GetPorts()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("parsePortSpecs(%q) = %v; client-go: %v", specs, got, want)
		}
		var again []string
		for i, p := range got {
			if p.local != want[i].Local || p.remote != want[i].Remote || p.remote == 0 {
				t.Fatalf("parsePortSpecs(%q) = %v; client-go: %v", specs, got, want)
			}
			again = append(again, fmt.Sprintf("%d:%d", p.local, p.remote))
		}
		if re, err := parsePortSpecs(again); err != nil || fmt.Sprint(re) != fmt.Sprint(got) {
			t.Fatalf("parsePortSpecs(%q) = %v; re-rendered %q: %v, %v", specs, got, again, re, err)
		}
	})
}

// FuzzListenAddrs checks the raw and h2 transports' --address parser
// against client-go's (parseAddresses, through NewOnAddresses): the same
// error text, and the same listeners in the same order: each address
// once, sorted; "localhost" as 127.0.0.1 and ::1 with failure mode "all",
// an explicit address (which wins over localhost's) "any"; tcp4 for what
// client-go's parser reads as IPv4, tcp6 for the rest. The input is the
// comma list of --address.
func FuzzListenAddrs(f *testing.F) {
	for _, s := range []string{
		"localhost", "0.0.0.0,::1", "127.0.0.1", "::", "localhost,10.0.0.1",
		"::ffff:127.0.0.1", "fe80::1%eth0", "bogus", "", "0.0.0.0,localhost", "::1,localhost,::",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, list string) {
		addrs := strings.Split(list, ",")
		for _, a := range addrs {
			if (netutils.ParseIPSloppy(a) == nil) != (net.ParseIP(a) == nil) {
				return // IPv4 with leading zeros: client-go parses it, then cannot listen on it
			}
		}
		got, err := parseAddresses(addrs)
		_, cerr := portforward.NewOnAddresses(nil, addrs, []string{"80"}, nil, nil, io.Discard, io.Discard)
		if (err == nil) != (cerr == nil) || err != nil && err.Error() != cerr.Error() {
			t.Fatalf("parseAddresses(%q): %v; client-go: %v", addrs, err, cerr)
		}
		if err != nil {
			return
		}
		want := map[string]listenAddress{}
		for _, a := range addrs {
			if a == "localhost" {
				for _, l := range []listenAddress{{"127.0.0.1", "tcp4", "all"}, {"::1", "tcp6", "all"}} {
					if _, ok := want[l.address]; !ok {
						want[l.address] = l
					}
				}
				continue
			}
			protocol := "tcp6"
			if netutils.ParseIPSloppy(a).To4() != nil {
				protocol = "tcp4"
			}
			want[a] = listenAddress{a, protocol, "any"}
		}
		if len(got) != len(want) {
			t.Fatalf("parseAddresses(%q) = %v; client-go listens on %v", addrs, got, want)
		}
		for i, l := range got {
			if i > 0 && got[i-1].address >= l.address {
				t.Fatalf("parseAddresses(%q) = %v: not sorted by address, or %s twice", addrs, got, l.address)
			}
			if want[l.address] != l {
				t.Fatalf("parseAddresses(%q) = %v; client-go listens on %v", addrs, got, want)
			}
		}
	})
}

// resolveRecorder remembers the pods a server was asked to resolve.
type resolveRecorder struct {
	mu   sync.Mutex
	pods []nsenter.Pod
}

func (r *resolveRecorder) Resolve(_ context.Context, pod nsenter.Pod) (nsenter.Target, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pods = append(r.pods, pod)
	return nsenter.Target{}, nsenter.ErrPodNotFound
}

// resolvedBy sends GET requestURI to s and returns the pod it resolved, if
// it got that far.
func resolvedBy(s *server.Server, rec *resolveRecorder, requestURI string) (nsenter.Pod, bool) {
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + requestURI + " HTTP/1.1\r\nHost: node\r\n\r\n")))
	if err != nil {
		return nsenter.Pod{}, false // net/http refuses it: no pod
	}
	rec.mu.Lock()
	rec.pods = nil
	rec.mu.Unlock()
	s.ServeHTTP(httptest.NewRecorder(), r)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.pods) == 0 {
		return nsenter.Pod{}, false
	}
	return rec.pods[0], true
}

func podFields(p nsenter.Pod) string {
	return fmt.Sprintf("namespace %q name %q uid %q", p.Namespace, p.Name, p.UID)
}

// FuzzParseArgs checks that the pod the CLI is told to forward to is the
// pod the server is asked for: the URL each transport builds (client-go's
// and the probe's, and the raw and h2 transports') reaches a real
// portforwardd Server either not at all (refused before any pod is
// looked up) or as exactly that namespace and name, with no UID. kubectl
// refuses names that are not one path segment; a name must never select
// another pod.
func FuzzParseArgs(f *testing.F) {
	f.Add("web", "default")
	f.Add("pod/web", "kube-system")
	f.Add("pods/coredns-5d78c9869d-abcde", "kube-system")
	f.Add("po/web", "prod")
	f.Add("deployment/web", "default")
	f.Add("web%2Fx", "default")
	f.Add("..", "default")
	rec := &resolveRecorder{}
	s := server.New(server.Config{Resolver: rec})
	s.MarkServing()
	base, _ := url.Parse("http://127.0.0.1:10350")
	f.Fuzz(func(t *testing.T, pod, namespace string) {
		if strings.HasPrefix(pod, "-") || strings.HasPrefix(namespace, "-") {
			return // flags, not a pod
		}
		o, err := parseArgs([]string{"-n", namespace, pod, "80"}, io.Discard)
		if err != nil {
			return
		}
		if o.pod == "" || o.namespace != namespace {
			t.Fatalf("parseArgs(%q, -n %q): pod %q, namespace %q", pod, namespace, o.pod, o.namespace)
		}
		want := nsenter.Pod{Namespace: o.namespace, Name: o.pod}
		// forward, probeTransport and forwardH2 build their URL this way;
		// client-go, the probe and h2 send it as u.String().
		joined, err := url.Parse(podURL(base, o.namespace, o.pod).String())
		if err != nil {
			return // the CLI fails before sending anything
		}
		raw := &rawForwarder{base: base, namespace: o.namespace, pod: o.pod}
		for _, u := range []struct{ transport, requestURI string }{
			{"spdy, websocket, h2, probe", joined.RequestURI()},
			{"raw", raw.path()},
		} {
			if got, ok := resolvedBy(s, rec, u.requestURI); ok && got != want {
				t.Fatalf("portforward -n %q %q: the %s URL %q makes the server look up %s, not %s", namespace, pod, u.transport, u.requestURI, podFields(got), podFields(want))
			}
		}
	})
}
