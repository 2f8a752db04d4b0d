package main

import (
	"testing"
)

// TestRawGreetingAfter101: a pod server that talks first (SSH, SMTP) may
// have its greeting arrive in the same read as the 101; the local client
// gets it first, and the connection then forwards both ways.
func TestRawGreetingAfter101(t *testing.T) {
	const greeting = "SSH-2.0-OpenSSH_9.6\r\n"
	d := startFakeDaemon(t, greeting)
	c := startCLI(t, "--server", d.URL, "--transport", "raw", "--address", "127.0.0.1", "-n", "ns", "pod", ":22")
	port := c.localPort(t)
	echoOnce(t, port, greeting, "client hello")
	if got, want := <-d.uris, "/portForward/ns/pod?port=22"; got != want {
		t.Errorf("upgrade request URI %q, want %q", got, want)
	}
	if s := c.stderr.String(); s != "" {
		t.Errorf("stderr %q, want nothing", s)
	}
}

// TestServerQueryIgnored: a query in --server does not change the pod's
// URL that raw and h2 ask for (the probe's and client-go's ignore it too).
func TestServerQueryIgnored(t *testing.T) {
	for _, transport := range []string{"raw", "h2"} {
		t.Run(transport, func(t *testing.T) {
			d := startFakeDaemon(t, "")
			c := startCLI(t, "--server", d.URL+"/?x=y", "--transport", transport, "--address", "127.0.0.1", "-n", "ns", "pod", ":80")
			echoOnce(t, c.localPort(t), "", "ping")
			if got, want := <-d.uris, "/portForward/ns/pod?port=80"; got != want {
				t.Errorf("request URI %q, want %q", got, want)
			}
		})
	}
}
