package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

// path is one way of reaching the bench server: what a client measures.
type path struct {
	name     string
	upload   func(size int64) (time.Duration, error)
	download func(size int64) (time.Duration, error)
	setup    func() (time.Duration, error)
}

// tcpPath reaches the bench server through a TCP address: the server
// itself, or a local port client-go forwards.
func tcpPath(name, addr string) path {
	return path{
		name: name,
		upload: func(size int64) (time.Duration, error) {
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			start := time.Now()
			c.Write([]byte{'S'})
			if err := writeN(c, size); err != nil {
				return 0, err
			}
			c.(*net.TCPConn).CloseWrite()
			return time.Since(start), expectCount(c, size)
		},
		download: func(size int64) (time.Duration, error) {
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			start := time.Now()
			c.Write(append([]byte{'R'}, binary.BigEndian.AppendUint64(nil, uint64(size))...))
			n, err := io.Copy(io.Discard, c)
			if err == nil && n != size {
				err = fmt.Errorf("got %d bytes, want %d", n, size)
			}
			return time.Since(start), err
		},
		setup: func() (time.Duration, error) {
			start := time.Now()
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			c.Write([]byte{'E'})
			_, err = io.ReadFull(c, make([]byte, 1))
			return time.Since(start), err
		},
	}
}

// v4Path reaches the bench server with the WebSocket v4 channel protocol:
// one WebSocket per connection, data on channel 0.
func v4Path(name, daemonAddr, route string, remote int) path {
	u := url.URL{Scheme: "ws", Host: daemonAddr, Path: route, RawQuery: "port=" + strconv.Itoa(remote)}
	dial := func() (*websocket.Conn, error) {
		d := websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}, ReadBufferSize: 32 << 10, WriteBufferSize: 32 << 10}
		ws, _, err := d.Dial(u.String(), nil)
		if err != nil {
			return nil, err
		}
		for range 2 { // the port prefixes on channels 0 and 1
			if _, _, err := ws.ReadMessage(); err != nil {
				ws.Close()
				return nil, err
			}
		}
		return ws, nil
	}
	send := func(ws *websocket.Conn, p []byte) error {
		return ws.WriteMessage(websocket.BinaryMessage, append([]byte{0}, p...))
	}
	// recv reads channel-0 payload bytes until want have arrived or the
	// socket ends (want < 0).
	recv := func(ws *websocket.Conn, want int64) (int64, error) {
		var got int64
		for want < 0 || got < want {
			_, r, err := ws.NextReader()
			if err != nil {
				if want < 0 {
					return got, nil
				}
				return got, err
			}
			var ch [1]byte
			if _, err := io.ReadFull(r, ch[:]); err != nil || ch[0] != 0 {
				continue
			}
			n, _ := io.Copy(io.Discard, r)
			got += n
		}
		return got, nil
	}
	return path{
		name: name,
		upload: func(size int64) (time.Duration, error) {
			ws, err := dial()
			if err != nil {
				return 0, err
			}
			defer ws.Close()
			start := time.Now()
			// v4 cannot half-close: the sink is told the size up front.
			send(ws, append([]byte{'N'}, binary.BigEndian.AppendUint64(nil, uint64(size))...))
			chunk := pattern[:32<<10]
			for sent := int64(0); sent < size; sent += int64(len(chunk)) {
				if err := send(ws, chunk); err != nil {
					return 0, err
				}
			}
			if _, err := recv(ws, 8); err != nil {
				return 0, err
			}
			return time.Since(start), nil
		},
		download: func(size int64) (time.Duration, error) {
			ws, err := dial()
			if err != nil {
				return 0, err
			}
			defer ws.Close()
			start := time.Now()
			send(ws, append([]byte{'R'}, binary.BigEndian.AppendUint64(nil, uint64(size))...))
			n, err := recv(ws, size)
			if err == nil && n != size {
				err = fmt.Errorf("got %d bytes, want %d", n, size)
			}
			return time.Since(start), err
		},
		setup: func() (time.Duration, error) {
			start := time.Now()
			ws, err := dial()
			if err != nil {
				return 0, err
			}
			defer ws.Close()
			send(ws, []byte{'E'})
			_, err = recv(ws, 1)
			return time.Since(start), err
		},
	}
}

func expectCount(c net.Conn, size int64) error {
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return err
	}
	if got != size {
		return fmt.Errorf("server got %d bytes, want %d", got, size)
	}
	return nil
}

// forward starts client-go's port-forward as kubectl does (createDialer):
// plain SPDY, or the WebSocket tunnel with SPDY as the fallback. It returns
// the local port.
func forward(daemonAddr, route string, remote int, tunnel bool) (int, func(), error) {
	rt, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: "http://" + daemonAddr})
	if err != nil {
		return 0, nil, err
	}
	u := &url.URL{Scheme: "http", Host: daemonAddr, Path: route}
	dialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	if tunnel {
		td, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, &rest.Config{Host: "http://" + daemonAddr})
		if err != nil {
			return 0, nil, err
		}
		dialer = portforward.NewFallbackDialerForStreaming(td, dialer, func(err error) bool {
			return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
		})
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", remote)}, stop, ready, io.Discard, os.Stderr)
	if err != nil {
		return 0, nil, err
	}
	errc := make(chan error, 1)
	go func() { errc <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		return 0, nil, fmt.Errorf("port-forward: %w", err)
	}
	ports, err := pf.GetPorts()
	if err != nil {
		close(stop)
		return 0, nil, err
	}
	return int(ports[0].Local), func() { close(stop) }, nil
}
