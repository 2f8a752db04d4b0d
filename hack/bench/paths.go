package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/portforwardd/portforwardd/streams"
)

var errNotApplicable = errors.New("not applicable to this path")

// holdBytes is what the stuck stream of the head-of-line measurement
// sends into a pod that never reads.
const holdBytes = 8 << 20

// path is one way of reaching the bench server, and the server process
// behind it (nil for a direct connection).
type path struct {
	name       string
	key        string // its -paths name
	proc       *proc
	client     *proc // the client process in front of it (the CLI), or nil: the client runs in the bench
	upload     func(size int64) (time.Duration, error)
	download   func(size int64) (time.Duration, error)
	parallel   func(n int, size int64) (time.Duration, error)
	setup      func() (time.Duration, error)
	headOfLine func(size int64) (result, error)
}

func (p path) cpu() float64 {
	if p.proc == nil {
		return 0
	}
	return p.proc.cpuSeconds()
}

func (p path) clientCPU() float64 {
	if p.client == nil {
		return 0
	}
	return p.client.cpuSeconds()
}

// dialer opens a connection to the bench server along one path.
type dialer func() (*net.TCPConn, error)

func tcpDialer(addr string) dialer {
	return func() (*net.TCPConn, error) {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
}

// rawDialer opens each connection with portforwardd's connect-tcp
// upgrade.
func rawDialer(daemonAddr, route string, remote int) dialer {
	return func() (*net.TCPConn, error) {
		c, err := net.Dial("tcp4", daemonAddr)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(c, "GET %s?port=%d HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-tcp\r\n\r\n", route, remote)
		// Read the response byte by byte, so nothing after it is buffered.
		var head []byte
		b := make([]byte, 1)
		for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
			if _, err := c.Read(b); err != nil {
				c.Close()
				return nil, err
			}
			head = append(head, b[0])
		}
		if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
			c.Close()
			return nil, fmt.Errorf("upgrade refused: %s", head)
		}
		return c.(*net.TCPConn), nil
	}
}

func dialCmd(dial dialer, cmd byte, arg int64) (*net.TCPConn, error) {
	c, err := dial()
	if err != nil {
		return nil, err
	}
	b := []byte{cmd}
	if arg >= 0 {
		b = binary.BigEndian.AppendUint64(b, uint64(arg))
	}
	if _, err := c.Write(b); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func download(dial dialer, size int64) error {
	c, err := dialCmd(dial, 'R', size)
	if err != nil {
		return err
	}
	defer c.Close()
	n, err := io.Copy(io.Discard, c)
	if err == nil && n != size {
		err = fmt.Errorf("got %d bytes, want %d", n, size)
	}
	return err
}

// upload sends size bytes to an announced-size sink and waits for its
// count. It does not rely on half-close: containerd's loop (the reference
// stack) never passes the client's EOF on to the pod.
func upload(dial dialer, size int64, deadline time.Time) (int64, error) {
	c, err := dialCmd(dial, 'N', size)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	var sent int64
	for sent < size {
		chunk := pattern[:min(int64(len(pattern)), size-sent)]
		n, err := c.Write(chunk)
		sent += int64(n)
		if err != nil {
			return sent, err
		}
	}
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return sent, err
	}
	if got != size {
		return sent, fmt.Errorf("server got %d bytes, want %d", got, size)
	}
	return sent, nil
}

// tcpPath reaches the bench server through connections dial opens: to the
// server itself, to a local port a port-forward serves, or upgraded.
func tcpPath(name string, addr dialer, p *proc) path {
	return path{
		name: name,
		proc: p,
		upload: func(size int64) (time.Duration, error) {
			start := time.Now()
			_, err := upload(addr, size, time.Now().Add(5*time.Minute))
			return time.Since(start), err
		},
		download: func(size int64) (time.Duration, error) {
			start := time.Now()
			err := download(addr, size)
			return time.Since(start), err
		},
		parallel: func(n int, size int64) (time.Duration, error) {
			return parallel(n, size, func(each int64) error { return download(addr, each) })
		},
		setup: func() (time.Duration, error) {
			start := time.Now()
			c, err := dialCmd(addr, 'E', -1)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			_, err = io.ReadFull(c, make([]byte, 1))
			return time.Since(start), err
		},
		headOfLine: func(size int64) (result, error) {
			// Stream A sends holdBytes to a pod that never reads them.
			a, err := dialCmd(addr, 'H', -1)
			if err != nil {
				return result{}, err
			}
			defer a.Close()
			aDone := make(chan struct{})
			go func() {
				defer close(aDone)
				a.SetWriteDeadline(time.Now().Add(30 * time.Second))
				writeN(a, holdBytes)
			}()
			// Stream B uploads meanwhile, with 20 s to do it.
			const limit = 20 * time.Second
			start := time.Now()
			sent, err := upload(addr, size, start.Add(limit))
			elapsed := time.Since(start)
			a.Close()
			<-aDone
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return result{ok: true, note: fmt.Sprintf("stalled: %d MiB in %v", sent>>20, limit)}, nil
				}
				return result{}, err
			}
			return result{ok: true, rate: mibps(size, elapsed)}, nil
		},
	}
}

// v4Path reaches the bench server with the WebSocket v4 channel protocol:
// one WebSocket per connection, data on channel 0.
func v4Path(name, daemonAddr, route string, remote int, p *proc) path {
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
	recv := func(ws *websocket.Conn, want int64) (int64, error) {
		var got int64
		for got < want {
			_, r, err := ws.NextReader()
			if err != nil {
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
	notApplicable := func(int, int64) (time.Duration, error) { return 0, errNotApplicable }
	return path{
		name: name,
		proc: p,
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
			_, err = recv(ws, 8)
			return time.Since(start), err
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
		parallel: notApplicable,
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
		headOfLine: func(int64) (result, error) { return result{}, errNotApplicable },
	}
}

// forward starts client-go's port-forward as kubectl does (createDialer):
// plain SPDY, or the WebSocket tunnel with SPDY as the fallback. It returns
// the local port.
func forward(serverAddr, route string, remote int, tunnel bool) (int, func(), error) {
	rt, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: "http://" + serverAddr})
	if err != nil {
		return 0, nil, err
	}
	u := &url.URL{Scheme: "http", Host: serverAddr, Path: route}
	dialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	if tunnel {
		td, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, &rest.Config{Host: "http://" + serverAddr})
		if err != nil {
			return 0, nil, err
		}
		dialer = portforward.NewFallbackDialerForStreaming(td, dialer, func(err error) bool {
			return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
		})
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", remote)}, stop, ready, io.Discard, io.Discard)
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
	var once sync.Once
	return int(ports[0].Local), func() { once.Do(func() { close(stop) }) }, nil
}

// h2Path reaches the bench server through portforwardd's HTTP/2 streams:
// every connection is one stream of a shared h2c connection.
func h2Path(name, daemonAddr, route string, remote int, p *proc) path {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &protocols, MaxConnsPerHost: 1, HTTP2: &http.HTTP2Config{
		MaxReadFrameSize: 1 << 20, MaxReceiveBufferPerStream: 8 << 20, MaxReceiveBufferPerConnection: 64 << 20,
	}}}
	target := fmt.Sprintf("http://%s%s?port=%d", daemonAddr, route, remote)
	post := func(body io.Reader) (*http.Response, error) {
		resp, err := client.Post(target, "application/octet-stream", body)
		if err == nil && resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("status %s", resp.Status)
		}
		return resp, err
	}
	cmd := func(c byte, arg int64) []byte {
		return binary.BigEndian.AppendUint64([]byte{c}, uint64(arg))
	}
	download := func(size int64) error {
		resp, err := post(bytes.NewReader(cmd('R', size)))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		// As the portforward CLI copies a response body.
		n, err := streams.CopyAdaptive(io.Discard, resp.Body)
		if err == nil && n != size {
			err = fmt.Errorf("got %d bytes, want %d", n, size)
		}
		return err
	}
	upload := func(size int64) error {
		body := io.MultiReader(bytes.NewReader(cmd('N', size)), &patternReader{n: size})
		resp, err := post(body)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var got int64
		if err := binary.Read(resp.Body, binary.BigEndian, &got); err != nil {
			return err
		}
		if got != size {
			return fmt.Errorf("server got %d bytes, want %d", got, size)
		}
		return nil
	}
	return path{
		name: name,
		proc: p,
		upload: func(size int64) (time.Duration, error) {
			start := time.Now()
			err := upload(size)
			return time.Since(start), err
		},
		download: func(size int64) (time.Duration, error) {
			start := time.Now()
			err := download(size)
			return time.Since(start), err
		},
		parallel: func(n int, size int64) (time.Duration, error) {
			return parallel(n, size, download)
		},
		setup: func() (time.Duration, error) {
			start := time.Now()
			pr, pw := io.Pipe()
			defer pw.Close()
			go pw.Write([]byte{'E'})
			resp, err := post(pr)
			if err != nil {
				return 0, err
			}
			defer resp.Body.Close()
			_, err = io.ReadFull(resp.Body, make([]byte, 1))
			return time.Since(start), err
		},
		headOfLine: func(size int64) (result, error) {
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() {
				pw.Write([]byte{'H'})
				writeN(pw, holdBytes)
			}()
			go func() {
				if resp, err := post(pr); err == nil {
					resp.Body.Close()
				}
			}()
			start := time.Now()
			err := upload(size)
			if err != nil {
				return result{}, err
			}
			return result{ok: true, rate: mibps(size, time.Since(start))}, nil
		},
	}
}

// patternReader yields n bytes of the bench pattern.
type patternReader struct{ n int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(int64(len(p)), r.n)], pattern)
	r.n -= int64(k)
	return k, nil
}

// parallel runs n downloads of size/n bytes at once and times them all.
func parallel(n int, size int64, download func(int64) error) (time.Duration, error) {
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() { errs <- download(size / int64(n)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}
