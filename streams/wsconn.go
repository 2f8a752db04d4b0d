package streams

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// WebSocketNetConn returns ws as a net.Conn whose byte stream is the
// concatenation of the payloads of ws's binary messages, in both
// directions: message boundaries mean nothing. It is how SPDY runs over a
// WebSocket (subprotocol SPDY/3.1+portforward.k8s.io); client-go's
// TunnelingConnection is the client side of the same mapping.
//
// Read returns io.EOF after a close frame with status 1000 and an error for
// a text message. Each Write sends one binary message. Close sends a close
// frame with status 1000, then closes the connection. Pings are answered
// beside the messages, never by Read, so a write waiting for a client that
// does not read holds up neither what the client sends nor its pongs
// (gorilla's own handler waited a second for it, on Read, then dropped the
// pong).
func WebSocketNetConn(ws *websocket.Conn) net.Conn {
	c := &wsNetConn{ws: ws}
	// No deadline of its own: the session's idle timeout closes a
	// connection whose client never reads, which ends the pong's write.
	c.pongs = pongs{ws: ws, deadline: func() time.Time { return time.Time{} }}
	ws.SetPingHandler(func(data string) error {
		c.pongs.ping(data)
		return nil
	})
	return c
}

var errTextMessage = errors.New("websocket tunnel: text message received, binary expected")

type wsNetConn struct {
	ws *websocket.Conn

	r io.Reader // the message being read; owned by the reading goroutine

	wmu       sync.Mutex // one message writer at a time, as gorilla requires
	pongs     pongs      // the answers to pings, written beside the messages
	closeOnce sync.Once
	closeErr  error
}

func (c *wsNetConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errTextMessage
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsNetConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsNetConn) Close() error {
	c.closeOnce.Do(func() {
		c.pongs.flush(time.Second)
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		c.closeErr = c.ws.Close()
	})
	return c.closeErr
}

func (c *wsNetConn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *wsNetConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

func (c *wsNetConn) SetDeadline(t time.Time) error {
	if err := c.ws.SetReadDeadline(t); err != nil {
		return err
	}
	return c.ws.SetWriteDeadline(t)
}

func (c *wsNetConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsNetConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }

func (c *wsNetConn) String() string { return fmt.Sprintf("websocket %s", c.ws.RemoteAddr()) }
