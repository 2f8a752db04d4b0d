package main

import (
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/portforwardd/portforwardd/streams/spdy"
)

// serveNull runs the floor of the kubectl path's setup latency: a SPDY
// port-forward server that answers every stream at once and echoes the
// first byte of each data stream from memory, with no pod, no namespace
// and no dial. What client-go spends around it is what no server can
// save. It never returns.
func serveNull(listen string) error {
	ln, err := net.Listen("tcp4", listen)
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String()) // the parent reads the address
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		nc.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"))
		spdy.Serve(nc, func(s *spdy.Stream) error {
			go func() {
				defer s.Reset()
				if s.Headers().Get("streamType") == "data" {
					b := make([]byte, 1)
					if _, err := io.ReadFull(s, b); err != nil {
						return
					}
					s.Write(b)
				}
				io.Copy(io.Discard, s)
				s.CloseWrite()
			}()
			return nil
		}, spdy.Options{})
	}))
}
