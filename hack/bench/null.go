package main

import (
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/gorilla/websocket"

	"github.com/portforwardd/portforwardd/streams"
	"github.com/portforwardd/portforwardd/streams/spdy"
)

// serveNull runs the floor of the kubectl path: a SPDY port-forward server
// that answers every data stream itself with the bench server's protocol,
// from memory, with no pod, no namespace, no dial and no second socket.
// It takes SPDY upgrades and the WebSocket tunnel (SPDY inside WebSocket
// messages, with the same read and write buffers as portforwardd). What
// client-go spends around it is what no server can save: its setup
// latency and its bulk rates bound every server behind client-go's
// port-forward. It never returns.
func serveNull(listen string) error {
	ln, err := net.Listen("tcp4", listen)
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String()) // the parent reads the address
	return serveNullOn(ln)
}

// serveNullOn serves the null SPDY server on ln until ln is closed.
func serveNullOn(ln net.Listener) error {
	tunnel := websocket.Upgrader{
		ReadBufferSize:  64 << 10,
		WriteBufferSize: 64 << 10,
		Subprotocols:    []string{"SPDY/3.1+portforward.k8s.io"},
	}
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var nc net.Conn
		if websocket.IsWebSocketUpgrade(r) {
			ws, err := tunnel.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			nc = streams.WebSocketNetConn(ws)
		} else {
			c, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"))
			nc = c
		}
		c := spdy.Serve(nc, func(s *spdy.Stream) error {
			go func() {
				defer s.Reset()
				if s.Headers().Get("streamType") == "data" {
					handleBench(s)
					return
				}
				io.Copy(io.Discard, s)
				s.CloseWrite()
			}()
			return nil
		}, spdy.Options{})
		<-c.Done()
	}))
}
