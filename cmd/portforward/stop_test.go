package main

import (
	"net"
	"testing"
	"time"
)

// TestStopWhileServerSilent: SIGINT while the server has accepted the
// connection but not answered (the upgrade of spdy and websocket, the
// OPTIONS probe of auto) ends the CLI with exit code 0 at once.
func TestStopWhileServerSilent(t *testing.T) {
	for _, transport := range []string{"spdy", "websocket", "auto"} {
		t.Run(transport, func(t *testing.T) {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				if c, err := ln.Accept(); err == nil {
					accepted <- c // never answered
				}
			}()
			c := startCLI(t, "--server", "http://"+ln.Addr().String(), "--transport", transport, "--address", "127.0.0.1", "pod", ":80")
			select {
			case conn := <-accepted:
				defer conn.Close()
			case <-c.exited:
				t.Fatalf("exit %d before the server answered; stderr %q", c.code, c.stderr)
			case <-time.After(failAfter):
				t.Fatalf("the CLI did not connect to the server within %v", failAfter)
			}
			c.stop()
			if code := c.exitCode(t, "SIGINT"); code != 0 {
				t.Errorf("exit %d after SIGINT, want 0; stderr %q", code, c.stderr)
			}
		})
	}
}
