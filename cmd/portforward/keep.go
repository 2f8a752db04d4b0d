package main

import (
	"bytes"
	"net/http"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

// keepDialer dials as Dialer does, and keeps the connection open when
// client-go's PortForwarder closes it after one forwarded connection's
// error (any text on its error stream: nothing listens on the pod's port,
// say), for as long as portforwardd says the pod still exists and the
// error did not say its namespace is gone: an error on
// one connection ends the others only when the pod is gone (kubectl ends
// them all). A server that is not portforwardd (a kubelet, an API server)
// cannot say so, and the connection is closed, as by kubectl.
type keepDialer struct {
	streamhttp.Dialer
	podExists func() bool // asks the server

	mu   sync.Mutex
	conn streamhttp.Connection // the one dialed, closed by closeConn
}

func (d *keepDialer) Dial(protocols ...string) (streamhttp.Connection, string, error) {
	c, protocol, err := d.Dialer.Dial(protocols...)
	if err != nil {
		return c, protocol, err
	}
	d.mu.Lock()
	d.conn = c
	d.mu.Unlock()
	return &keptConn{Connection: c, podExists: d.podExists}, protocol, nil
}

// closeConn closes the connection dialed, if any: the PortForwarder's own
// Close may have kept it.
func (d *keepDialer) closeConn() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil {
		d.conn.Close()
	}
}

// keptConn is a connection that Close closes only once the pod is gone.
// The PortForwarder closes it after a forwarded connection's error and
// when it returns; keepDialer.closeConn closes it for good after that.
type keptConn struct {
	streamhttp.Connection
	podExists func() bool
	// gone is set once an error stream said that the namespace of the
	// session's pod is gone: the pod may exist again under its name (a
	// new pod, its namespace created again), but the server's session is
	// bound to the one it was opened for and fails every connection
	// since, as the kubelet's, bound to a sandbox, does.
	gone atomic.Bool
}

// netnsGoneText is what portforwardd writes on a connection's error
// stream when the namespace of the session's pod is gone
// (nsenter.ErrNetnsGone).
const netnsGoneText = "network namespace is gone"

func (c *keptConn) Close() error {
	select {
	case <-c.Connection.CloseChan():
		return nil // closed already: the server, or the network, ended it
	default:
	}
	if !c.gone.Load() && c.podExists() {
		return nil
	}
	return c.Connection.Close()
}

// CreateStream watches the error streams the PortForwarder creates: it
// reads each to its end, and only then reports the error and calls Close.
func (c *keptConn) CreateStream(h http.Header) (streamhttp.Stream, error) {
	st, err := c.Connection.CreateStream(h)
	if err != nil || h.Get(corev1.StreamType) != corev1.StreamTypeError {
		return st, err
	}
	return &errorStream{Stream: st, gone: &c.gone}, nil
}

// errorStream is an error stream whose text, up to its first 4 KiB, sets
// gone when it says the pod's namespace is gone.
type errorStream struct {
	streamhttp.Stream
	gone *atomic.Bool
	text []byte
}

func (s *errorStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if room := 4<<10 - len(s.text); room > 0 {
		s.text = append(s.text, p[:min(n, room)]...)
		if bytes.Contains(s.text, []byte(netnsGoneText)) {
			s.gone.Store(true)
		}
	}
	return n, err
}
