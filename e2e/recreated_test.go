package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/portforward"
)

// recreate deletes the pod's namespace file and creates it again under
// the same name, with lo up: the pod was deleted and created again (a
// StatefulSet's pod), or its sandbox was. The old namespace is held until
// the test ends, as a process still in it would: freed, its inode number
// could go to the new one, which a kernel without NS_GET_ID (before 6.18)
// could not tell apart, and the test would then depend on the kernel.
func (p *pod) recreate(t *testing.T) {
	t.Helper()
	old, err := os.Open(p.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old.Close() })
	p.remove(t)
	ipCmd(t, "netns", "add", p.netnsName)
	ipCmd(t, "-n", p.netnsName, "link", "set", "lo", "up")
}

// readFrom reads what a forwarded connection gives, within 30 s.
func readFrom(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if errors.Is(err, net.ErrClosed) || err != nil && strings.Contains(err.Error(), "timeout") {
		t.Fatalf("read %q, then %v", b, err)
	}
	return string(b)
}

// TestRecreatedPodEndsTheSession: a session is for the pod it was opened
// to. Once that pod is deleted and a new one takes its name (its
// namespace file created again), the session's next connection fails
// with "network namespace is gone" and kubectl's session ends, as at the
// kubelet, whose session is bound to the sandbox; it does not go on into
// the new pod. A new session reaches the new pod. The CLI's spdy and
// websocket transports, which keep their session after an error while
// the pod exists, end with "lost connection to pod" as kubectl does.
func TestRecreatedPodEndsTheSession(t *testing.T) {
	d := startDaemon(t)
	eachTransport(t, func(t *testing.T, tr transport) {
		p := newPod(t)
		ln := p.listen(t, "tcp4", "127.0.0.1:0")
		serveEcho(ln)
		remote := port(ln)
		f := startForward(t, d, tr, p.route(), remote)
		echoOnce(t, f.dial(t), "to the first pod")

		ln.Close()
		p.recreate(t)
		serveEach(p.listen(t, "tcp4", "127.0.0.1:"+strconv.Itoa(remote)), func(c *net.TCPConn) { io.WriteString(c, "new pod") })

		old := len(f.errors())
		if got := readFrom(t, f.dial(t)); got != "" {
			t.Fatalf("a connection of the session opened to the deleted pod read %q from the pod that took its name", got)
		}
		var msgs []string
		eventually(t, 30*time.Second, func() (bool, string) {
			msgs = f.errors()[old:]
			return hasSubstring(msgs, "network namespace is gone"), fmt.Sprintf("client-go errors %q", msgs)
		})
		if err := f.wait(t); !errors.Is(err, portforward.ErrLostConnectionToPod) {
			t.Fatalf("ForwardPorts returned %v, want %v", err, portforward.ErrLostConnectionToPod)
		}
		g := startForward(t, d, tr, p.route(), remote)
		if got := readFrom(t, g.dial(t)); got != "new pod" {
			t.Fatalf("a new session to the re-created pod read %q, want %q", got, "new pod")
		}
	})
	for _, transport := range []string{"spdy", "websocket"} {
		t.Run("cli/"+transport, func(t *testing.T) {
			p, ln, c, local := startEchoCLI(t, d, transport)
			before := dialLocal(t, local)
			echoOnce(t, before, "to the first pod")
			before.Close() // the session drains: its forwards in flight end first
			remote := port(ln)
			ln.Close()
			p.recreate(t)
			serveEach(p.listen(t, "tcp4", "127.0.0.1:"+strconv.Itoa(remote)), func(c *net.TCPConn) { io.WriteString(c, "new pod") })
			if got := readFrom(t, dialLocal(t, local)); got != "" {
				t.Fatalf("a local connection after the pod was re-created read %q from the new pod", got)
			}
			if code := c.exitCode(t); code != 1 {
				t.Fatalf("exit code %d, want 1; stderr %q", code, c.stderr)
			}
			if stderr := c.stderr.String(); !strings.HasSuffix(stderr, "error: lost connection to pod\n") || !strings.Contains(stderr, "network namespace is gone") {
				t.Fatalf("stderr %q: want the failed connection's \"network namespace is gone\", then \"error: lost connection to pod\"", stderr)
			}
		})
	}
}
