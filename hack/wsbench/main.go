// Command wsbench compares WebSocket libraries as the server side of
// portforwardd's WebSocket transports: gorilla/websocket, coder/websocket,
// and golang.org/x/net/websocket (the engine under apimachinery's wsstream,
// which the kubelet uses). The client is always gorilla/websocket, as in
// client-go. Each library receives 1 GiB in masked 32 KiB binary messages
// (what client-go's tunnel sends) and sends 1 GiB in 128 KiB messages, over
// loopback; the median of interleaved runs is printed.
//
//	go run ./hack/wsbench -size 1GiB -runs 3
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"
	xws "golang.org/x/net/websocket"
)

const (
	upMsg   = 32 << 10
	downMsg = 128 << 10
)

type server struct {
	name    string
	handler func(mode string, size int64) http.Handler
}

func main() {
	sizeMiB := flag.Int64("size-mib", 1024, "MiB per transfer")
	runs := flag.Int("runs", 3, "interleaved runs (median reported)")
	flag.Parse()
	size := *sizeMiB << 20
	servers := []server{
		{"gorilla/websocket", gorillaServer},
		{"coder/websocket", coderServer},
		{"x/net/websocket (wsstream)", xnetServer},
	}
	fmt.Printf("server-side WebSocket libraries, %d MiB per transfer, gorilla client, median of %d\n\n", *sizeMiB, *runs)
	fmt.Println("| library | client→server (32 KiB msgs) | client→server (tunnel: 4 B, 4 B, 32 KiB msgs) | server→client (128 KiB msgs) |")
	fmt.Println("|---|---:|---:|---:|")
	modes := []string{"sink", "tunnel", "source"}
	results := map[string][3][]time.Duration{}
	for range *runs {
		for _, s := range servers {
			r := results[s.name]
			for i, mode := range modes {
				d, err := measure(s, mode, size)
				if err != nil {
					fmt.Fprintf(os.Stderr, "%s %s: %v\n", s.name, mode, err)
					os.Exit(1)
				}
				r[i] = append(r[i], d)
			}
			results[s.name] = r
		}
	}
	for _, s := range servers {
		r := results[s.name]
		fmt.Printf("| %s | %.0f MiB/s | %.0f MiB/s | %.0f MiB/s |\n", s.name,
			mibps(size, median(r[0])), mibps(size, median(r[1])), mibps(size, median(r[2])))
	}
}

func measure(s server, mode string, size int64) (time.Duration, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	go http.Serve(ln, s.handler(mode, size))
	d := websocket.Dialer{ReadBufferSize: 32 << 10, WriteBufferSize: 32 << 10}
	c, _, err := d.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	if mode == "sink" || mode == "tunnel" {
		// client-go's tunnel writes each SPDY DATA frame as three
		// messages: stream id, flags+length, payload.
		msg, hdr := make([]byte, upMsg), make([]byte, 4)
		for sent := int64(0); sent < size; sent += upMsg {
			if mode == "tunnel" {
				c.WriteMessage(websocket.BinaryMessage, hdr)
				c.WriteMessage(websocket.BinaryMessage, hdr)
			}
			if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				return 0, err
			}
		}
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		for { // until the server's close
			if _, _, err := c.NextReader(); err != nil {
				break
			}
		}
		return time.Since(start), nil
	}
	var got int64
	for {
		_, r, err := c.NextReader()
		if err != nil {
			break
		}
		n, _ := io.Copy(io.Discard, r)
		got += n
	}
	if got != size {
		return 0, fmt.Errorf("received %d bytes, want %d", got, size)
	}
	return time.Since(start), nil
}

func gorillaServer(mode string, size int64) http.Handler {
	up := websocket.Upgrader{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, downMsg)
		if mode != "source" {
			for {
				_, rd, err := c.NextReader()
				if err != nil {
					break
				}
				io.CopyBuffer(io.Discard, rd, buf)
			}
			c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			return
		}
		for sent := int64(0); sent < size; sent += downMsg {
			c.WriteMessage(websocket.BinaryMessage, buf)
		}
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		c.ReadMessage()
	})
}

func coderServer(mode string, size int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := coder.Accept(w, r, &coder.AcceptOptions{CompressionMode: coder.CompressionDisabled})
		if err != nil {
			return
		}
		c.SetReadLimit(-1)
		ctx := context.Background()
		buf := make([]byte, downMsg)
		if mode != "source" {
			for {
				_, rd, err := c.Reader(ctx)
				if err != nil {
					break
				}
				io.CopyBuffer(io.Discard, rd, buf)
			}
			c.Close(coder.StatusNormalClosure, "")
			return
		}
		for sent := int64(0); sent < size; sent += downMsg {
			c.Write(ctx, coder.MessageBinary, buf)
		}
		c.Close(coder.StatusNormalClosure, "")
	})
}

func xnetServer(mode string, size int64) http.Handler {
	return xws.Server{Handshake: func(*xws.Config, *http.Request) error { return nil }, Handler: func(c *xws.Conn) {
		c.PayloadType = xws.BinaryFrame
		buf := make([]byte, downMsg)
		if mode != "source" {
			for {
				var msg []byte
				if err := xws.Message.Receive(c, &msg); err != nil {
					break
				}
			}
			c.WriteClose(1000)
			return
		}
		for sent := int64(0); sent < size; sent += downMsg {
			c.Write(buf)
		}
		c.WriteClose(1000)
		io.Copy(io.Discard, c)
	}}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func mibps(size int64, d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
