package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/portforward"
)

// The scenarios of Kubernetes' test/e2e/kubectl/portforward.go, each with
// the pod's server bound to 127.0.0.1 and to 0.0.0.0, driven by client-go's
// port-forward as kubectl runs it.

func TestKubernetesConnectSendNoData(t *testing.T) {
	d := startDaemon(t)
	eachCase(t, func(t *testing.T, tr transport, bindAddr string) {
		p := newPod(t)
		ln := p.listen(t, "tcp4", bindAddr)
		logs := runTester(ln, testerConfig{expected: "abc", chunks: 1, chunkSize: 1})
		f := startForward(t, d, tr, p.route(), port(ln))
		c := f.dial(t)
		c.Close()
		got := collect(t, logs)
		want := []string{"Accepted client connection", "Expected to read 3 bytes from client, but got 0 instead. err=EOF"}
		if !slices.Equal(got, want) {
			t.Fatalf("tester log: got %q, want %q", got, want)
		}
	})
}

func TestKubernetesConnectSendDataAndDisconnect(t *testing.T) {
	d := startDaemon(t)
	eachCase(t, func(t *testing.T, tr transport, bindAddr string) {
		p := newPod(t)
		ln := p.listen(t, "tcp4", bindAddr)
		logs := runTester(ln, testerConfig{expected: "abc", chunks: 10, chunkSize: 10, interval: 100 * time.Millisecond})
		f := startForward(t, d, tr, p.route(), port(ln))
		c := f.dial(t)
		if _, err := c.Write([]byte("abc")); err != nil {
			t.Fatal(err)
		}
		// The pod's FIN must reach us while our write side is open.
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if want := strings.Repeat("x", 100); string(got) != want {
			t.Fatalf("read %d bytes %q, want exactly 100 'x'", len(got), got)
		}
		c.CloseWrite()
		log := collect(t, logs)
		for _, want := range []string{"Accepted client connection", "Received expected client data", "Done"} {
			if !slices.Contains(log, want) {
				t.Errorf("tester log %q lacks %q", log, want)
			}
		}
		if errs := f.errors(); len(errs) != 0 {
			t.Errorf("client-go reported errors: %q", errs)
		}
	})
}

func TestKubernetesExpectNoClientRequest(t *testing.T) {
	d := startDaemon(t)
	eachCase(t, func(t *testing.T, tr transport, bindAddr string) {
		p := newPod(t)
		ln := p.listen(t, "tcp4", bindAddr)
		logs := runTester(ln, testerConfig{chunks: 10, chunkSize: 10, interval: 100 * time.Millisecond})
		f := startForward(t, d, tr, p.route(), port(ln))
		c := f.dial(t)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != strings.Repeat("x", 100) {
			t.Fatalf("read %q, %v; want exactly 100 'x'", got, err)
		}
		c.Close()
		log := collect(t, logs)
		if !slices.Contains(log, "Accepted client connection") || !slices.Contains(log, "Done") {
			t.Fatalf("tester log: %q", log)
		}
	})
}

// TestKubernetesClientClosesWhileRemoteWrites: a client that reads one byte
// of a large response and closes must not wedge the session.
func TestKubernetesClientClosesWhileRemoteWrites(t *testing.T) {
	d := startDaemon(t)
	eachCase(t, func(t *testing.T, tr transport, bindAddr string) {
		p := newPod(t)
		ln := p.listen(t, "tcp4", bindAddr)
		big := make([]byte, 40<<20)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/agnhost" {
				w.Write(big)
				return
			}
			w.Write([]byte("ok"))
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		f := startForward(t, d, tr, p.route(), port(ln))
		base := fmt.Sprintf("http://127.0.0.1:%d/", f.local)
		client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		get := func() {
			t.Helper()
			resp, err := client.Get(base)
			if err != nil {
				t.Fatalf("GET /: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /: %s", resp.Status)
			}
		}
		get()
		c := f.dial(t)
		fmt.Fprintf(c, "GET /agnhost HTTP/1.1\r\nHost: pod\r\n\r\n")
		if _, err := bufio.NewReader(c).ReadByte(); err != nil {
			t.Fatalf("read 1 byte of /agnhost: %v", err)
		}
		c.Close()
		get() // within the 15 s client timeout, as the Kubernetes test demands
	})
}

// TestKubernetesPodRemoved: the pod goes away (server gone, netns deleted);
// the client sees the kubelet's error text and the session ends, so kubectl
// exits with an error.
func TestKubernetesPodRemoved(t *testing.T) {
	d := startDaemon(t)
	eachCase(t, func(t *testing.T, tr transport, bindAddr string) {
		p := newPod(t)
		ln := p.listen(t, "tcp4", bindAddr)
		serveEcho(ln)
		remote := port(ln)
		f := startForward(t, d, tr, p.route(), remote)
		c := f.dial(t)
		echoOnce(t, c, "before removal")

		ln.Close()
		p.remove(t)
		c2, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", f.local))
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		c2.SetReadDeadline(time.Now().Add(30 * time.Second))
		io.ReadAll(c2) // ends when client-go gives up on this connection

		msgs := forwardErrors.wait(t, f.local)
		want := fmt.Sprintf("error forwarding port %d to pod %s/%s, uid : ", remote, p.namespace, p.name)
		if !hasSubstring(msgs, want) || !hasSubstring(msgs, "network namespace is gone") {
			t.Fatalf("client-go errors %q; want the kubelet's text %q about the gone namespace", msgs, want)
		}
		if err := f.wait(t); !errors.Is(err, portforward.ErrLostConnectionToPod) {
			t.Fatalf("ForwardPorts returned %v, want %v (kubectl exits 1)", err, portforward.ErrLostConnectionToPod)
		}
	})
}

func echoOnce(t *testing.T, c *net.TCPConn, msg string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	echoThrough(t, c, c, msg)
}

// echoThrough sends msg through a forward to an echo pod, writing w, and
// reads it back from r.
func echoThrough(t *testing.T, w io.Writer, r io.Reader, msg string) {
	t.Helper()
	if _, err := w.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: got %q, %v; want %q", buf, err, msg)
	}
}

// TestPodResetKeepsSession: a pod that resets one connection (as postgres
// does, kubernetes#111825) must not end the kubectl session: nothing is
// written on the error stream and the next connection works.
func TestPodResetKeepsSession(t *testing.T) {
	d := startDaemon(t)
	eachTransport(t, func(t *testing.T, tr transport) {
		p := newPod(t)
		ln := p.listen(t, "tcp4", "127.0.0.1:0")
		first := make(chan struct{})
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 1))
			c.(*net.TCPConn).SetLinger(0)
			c.Close() // RST
			close(first)
			serveEcho(ln)
		}()
		f := startForward(t, d, tr, p.route(), port(ln))
		c := f.dial(t)
		c.Write([]byte("x"))
		<-first
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		io.ReadAll(c)
		eventually(t, 10*time.Second, func() (bool, string) {
			got := d.metric(t, fmt.Sprintf(`portforwardd_streams_total{protocol=%q,result="reset"}`, tr.protocol))
			return got == 1, fmt.Sprintf("streams_total{result=reset} = %v", got)
		})
		c2 := f.dial(t)
		echoOnce(t, c2, "session survived the reset")
		if hasSubstring(f.errors(), "An error occurred forwarding") {
			t.Fatalf("the reset reached the error stream: %q", f.errors())
		}
	})
}
