package e2e

import (
	"crypto/tls"
	"io"
	"testing"
	"time"

	"github.com/portforwardd/portforwardd/server/auth/authtest"
)

// TestClientLeavingDuringReviewIsNoWebhookError: a client that closes its
// connection while its bearer token is being reviewed has not met a
// failing webhook. Anyone who reaches the listener can do it, with any
// token, as fast as it likes: it is one debug line, as the refusals a
// client brings on itself are, and no auth_denials_total{webhook_error}
// (the alert's series), where it was a warning blaming the webhook.
func TestClientLeavingDuringReviewIsNoWebhookError(t *testing.T) {
	pk := newPKI(t)
	api := authtest.New(t, "daemon-sa-token")
	kubeconfig := pk.webhookKubeconfig(t, api)
	d := startDaemon(t, "--tls-cert-file", pk.certFile, "--tls-private-key-file", pk.keyFile,
		"--auth-kubeconfig", kubeconfig, "--node-name", "node-7")
	release := api.Hold(t)

	conn, err := tls.Dial("tcp", d.addr, &tls.Config{RootCAs: pk.serverCA.Pool(), NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	const path = "/portForward/ns/leaving"
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer forged\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		return api.Calls(authtest.TokenReviewPath) == 1, "the TokenReview to be asked"
	})
	conn.Close()
	var got []logRecord
	eventually(t, 10*time.Second, func() (bool, string) {
		got = got[:0]
		for _, r := range d.records() {
			if r.Path == path {
				got = append(got, r)
			}
		}
		return len(got) > 0, "the request's line"
	})
	release()
	if len(got) != 1 || got[0].Level != "DEBUG" || got[0].Reason == "auth_webhook_error" {
		t.Errorf("a client that left during its TokenReview: lines %+v, want one DEBUG line, not a webhook error", got)
	}
	if n := d.metric(t, `portforwardd_auth_denials_total{reason="webhook_error"}`); n != 0 {
		t.Errorf("auth_denials_total{reason=\"webhook_error\"} = %v after a client left during its review, want 0", n)
	}
}
