package server

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"testing"
	"time"
)

// Go's own HTTP/2 client, sending requests as its idle connection reaches
// the daemon's idle timeout, loses none: each finds a connection the
// daemon either serves or has told (GOAWAY) to take no more.
func TestHTTP2RequestsAtTheIdleTimeoutAreServed(t *testing.T) {
	const timeout = 20 * time.Millisecond
	pod, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	go func() {
		for {
			c, err := pod.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	dialer := gatedDialer{addr: pod.Addr().String(), started: make(chan struct{}, 1024), gate: make(chan struct{})}
	close(dialer.gate)
	s := New(Config{Resolver: fuzzResolver{}, Dialer: dialer, IdleConnTimeout: timeout})
	s.MarkServing()
	hs := s.NewHTTPServer()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(s.Listener(ln))
	t.Cleanup(func() { hs.Close() })
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := "http://" + ln.Addr().String() + "/portForward/default/web?port=80"
	failed := 0
	const n = 200
	for i := range n {
		// Around the idle timeout: some requests come before it, some
		// as it fires, some after.
		time.Sleep(timeout - 5*time.Millisecond + rand.N(10*time.Millisecond)) // the timing is the test's subject
		body := []byte("request " + string(rune('a'+i%26)))
		resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			failed++
			t.Logf("request %d: %v", i, err)
			continue
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, body) {
			failed++
			t.Logf("request %d: echoed %q, %v", i, got, err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d requests failed", failed, n)
	}
}
