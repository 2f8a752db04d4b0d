package streams

import (
	"context"
	"testing"
	"time"

	"github.com/moby/spdystream"
)

// spdyPeer connects a raw spdystream client (the library client-go's SPDY
// transport is built on) to a session served by ServeSPDY.
func spdyPeer(t *testing.T, opts SPDYOptions) (*spdystream.Connection, Conn) {
	t.Helper()
	c, s := tcpPair(t)
	sess := NewSession(Config{Dial: loopbackDial})
	conn := ServeSPDY(s, sess.Accept, opts)
	done := make(chan struct{})
	go func() {
		sess.Run(context.Background(), conn)
		close(done)
	}()
	client, err := spdystream.NewConnection(c, false)
	if err != nil {
		t.Fatal(err)
	}
	go client.Serve(spdystream.NoOpStreamHandler)
	t.Cleanup(func() {
		client.Close()
		c.Close()
		<-done
	})
	return client, conn
}

func TestSPDYAnswersPings(t *testing.T) {
	client, _ := spdyPeer(t, SPDYOptions{})
	for i := range 3 {
		if _, err := client.Ping(); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
}

func TestSPDYIdleTimeoutClosesSilentConnection(t *testing.T) {
	client, conn := spdyPeer(t, SPDYOptions{IdleTimeout: 200 * time.Millisecond})
	select {
	case <-conn.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("server did not close an idle connection")
	}
	select {
	case <-client.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("client did not see the idle connection close")
	}
}

// TestSPDYPingsKeepConnectionAlive pings for three idle timeouts; every
// ping re-arms the timer, so the connection stays open.
func TestSPDYPingsKeepConnectionAlive(t *testing.T) {
	const idle = time.Second
	client, conn := spdyPeer(t, SPDYOptions{IdleTimeout: idle})
	deadline := time.Now().Add(3 * idle)
	for time.Now().Before(deadline) {
		if _, err := client.Ping(); err != nil {
			t.Fatalf("ping: %v", err)
		}
		select {
		case <-conn.Done():
			t.Fatal("connection closed although pings kept it busy")
		case <-time.After(idle / 10):
		}
	}
}
