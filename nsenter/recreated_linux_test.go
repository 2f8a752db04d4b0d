package nsenter

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestDialRefusesANamespaceRecreatedAtItsPath: a pod resolved, then
// deleted and created again under the same name (a restarted pod: `ip
// netns del` and `ip netns add` of the same file), is another pod. The
// kubelet's session is bound to its sandbox, whose streams fail once it
// has gone; a Target resolved before must not reach the new namespace
// now at its path: its dial fails as a namespace that is gone. A new
// resolution reaches the new pod.
func TestDialRefusesANamespaceRecreatedAtItsPath(t *testing.T) {
	name, path := newNetns(t)
	namespace, pod, _ := strings.Cut(name, "_")
	r := DirResolver{}
	target, err := r.Resolve(context.Background(), Pod{Namespace: namespace, Name: pod})
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	old := listenIn(t, path, "tcp4", "127.0.0.1:0")
	serveGreeting(t, old, "old")
	port := old.Addr().(*net.TCPAddr).Port
	c, err := Dialer{}.Dial(context.Background(), target, uint16(port))
	if err != nil {
		t.Fatalf("Dial before the pod was re-created: %v", err)
	}
	if got := readAll(t, c); got != "old" {
		t.Fatalf("Dial before the pod was re-created reached %q, want %q", got, "old")
	}
	c.Close()

	ip(t, "netns", "del", name)
	ip(t, "netns", "add", name)
	ip(t, "-n", name, "link", "set", "lo", "up")
	serveGreeting(t, listenIn(t, path, "tcp4", "127.0.0.1:"+strconv.Itoa(port)), "new")

	c, err = Dialer{}.Dial(context.Background(), target, uint16(port))
	if err == nil {
		got := readAll(t, c)
		c.Close()
		t.Fatalf("Dial of the Target resolved before the pod was re-created reached %q; want an error wrapping ErrNetnsGone", got)
	}
	if !errors.Is(err, ErrNetnsGone) || Reason(err) != "netns_gone" {
		t.Fatalf("Dial of the Target resolved before the pod was re-created: %v (reason %q); want ErrNetnsGone", err, Reason(err))
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the path", err)
	}

	target, err = r.Resolve(context.Background(), Pod{Namespace: namespace, Name: pod})
	if err != nil {
		t.Fatalf("Resolve after the pod was re-created: %v", err)
	}
	c, err = Dialer{}.Dial(context.Background(), target, uint16(port))
	if err != nil {
		t.Fatalf("Dial after a new Resolve: %v", err)
	}
	defer c.Close()
	if got := readAll(t, c); got != "new" {
		t.Fatalf("Dial after a new Resolve reached %q, want the re-created pod (%q)", got, "new")
	}
}
