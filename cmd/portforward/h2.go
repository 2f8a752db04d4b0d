package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/portforwardd/portforwardd/streams"
)

// h2IdleTimeout closes the shared HTTP/2 connection once it has carried
// no stream for this long: before the daemon does (after 90 s, by
// closing it, with no GOAWAY), so that a local connection that comes
// just then never sends its stream into a connection the server is
// closing: such a stream fails, and is not sent again (h2Body sends again
// only a stream a GOAWAY or REFUSED_STREAM says the server did not take).
const h2IdleTimeout = 60 * time.Second

// h2Config lets the server send large DATA frames (Go's default is 16 KiB)
// and gives each stream a window that covers a loopback bulk transfer; the
// server's side is tuned the same way.
var h2Config = &http.HTTP2Config{
	MaxReadFrameSize:              1 << 20,
	MaxReceiveBufferPerStream:     8 << 20,
	MaxReceiveBufferPerConnection: 64 << 20,
}

// forwardH2 carries c over one HTTP/2 stream: the request body is what c
// sends, the response body what the pod sends. A request that fails to
// dial the server, and a 404 (the pod does not exist), are lostErrors.
func (f *rawForwarder) forwardH2(c *net.TCPConn, remote uint16) error {
	u := podURL(f.base, f.namespace, f.pod)
	u.RawQuery = "port=" + strconv.Itoa(int(remote))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body, first := newH2Body(c)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), first)
	if err != nil {
		return err
	}
	req.GetBody = body.again
	if f.bearer != nil {
		tok, err := f.bearer()
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := f.h2.Do(req)
	body.answered()
	if err != nil {
		if opErr := (*net.OpError)(nil); errors.As(err, &opErr) && opErr.Op == "dial" && !localShortage(err) {
			return &lostError{err}
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		err := errors.New(strings.TrimSpace(string(body)))
		if resp.StatusCode == http.StatusNotFound {
			return &lostError{err}
		}
		return err
	}
	// A local client that resets after its FIN, or while the server does
	// not read, is noticed by neither direction: the stream is reset then
	// (the request's context), and c closed.
	var finToLocal atomic.Bool
	stopWatch := streams.WatchGone(streams.Watched{Conn: c, FinSent: &finToLocal, Gone: func() {
		cancel()
		resetConn(c)
	}})
	defer stopWatch()
	// Large reads while the download is bulk: each read of the body sends
	// the daemon a WINDOW_UPDATE pair.
	streams.CopyAdaptive(c, resp.Body)
	finToLocal.Store(true)
	c.CloseWrite()
	return nil
}
