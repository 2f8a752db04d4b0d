package streams

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// limitLog records OnLimit calls.
type limitLog struct {
	mu   sync.Mutex
	hits []string
}

func (l *limitLog) add(s string) { l.mu.Lock(); l.hits = append(l.hits, s); l.mu.Unlock() }

func (l *limitLog) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.hits, s)
}

func (l *limitLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.hits, ",")
}

// waitUntil polls cond until it holds (the servers' goroutines reach the
// state in their time), failing after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// v4Peer serves ServeChannels with cfg on a real WebSocket over loopback
// TCP, dialed with gorilla's client, and reads the ports' announcements.
func v4Peer(t *testing.T, cfg ChannelConfig) *websocket.Conn {
	t.Helper()
	served := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			close(served)
			return
		}
		ServeChannels(context.Background(), ws, cfg)
		close(served)
	}))
	t.Cleanup(srv.Close)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ws.Close()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Error("ServeChannels did not return after the client went away")
		}
	})
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range 2 * len(cfg.Ports) {
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatalf("port announcements: %v", err)
		}
	}
	return ws
}

// smallBuffers makes a socket's kernel buffers small (and fixed), so a
// peer that does not read fills them at once.
func smallBuffers(_, _ string, c syscall.RawConn) error {
	var err error
	c.Control(func(fd uintptr) {
		if err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10); err == nil {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4<<10)
		}
	})
	return err
}

// smallBufferDial is loopbackDial with smallBuffers.
func smallBufferDial(ctx context.Context, port uint16) (PodConn, error) {
	d := net.Dialer{Control: smallBuffers}
	c, err := d.DialContext(ctx, "tcp4", "127.0.0.1:"+strconv.Itoa(int(port)))
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// silentPod is a pod port that accepts connections and never reads them;
// its sockets have smallBuffers. Its connections come out of accepted.
func silentPod(t *testing.T) (port uint16, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := (&net.ListenConfig{Control: smallBuffers}).Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			conns <- c
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port), conns
}

// unacceptingPod is a pod port whose accept queue is full: a dial to it
// hangs, its SYNs dropped, as with a pod that stopped accepting.
func unacceptingPod(t *testing.T) uint16 {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.CloseOnExec(fd) // SOCK_CLOEXEC is Linux's
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil { // room for one connection
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return uint16(port)
}

// expectNormalCloseOnly reads the WebSocket up to the close 1000 that
// follows the end of every port, failing on a message on an error
// channel before it.
func expectNormalCloseOnly(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, msg, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure {
			return
		}
		if err != nil {
			t.Fatalf("websocket: %v, want a close 1000 once the reset port ended", err)
		}
		if len(msg) > 0 && msg[0]%2 == 1 {
			t.Fatalf("error channel %d got %q; a reset port gets nothing there", msg[0], msg[1:])
		}
	}
}

// spdyEchoes opens a SPDY pair sharing budget to an echoing pod and
// fails the test with failure() unless one byte comes back within 10 s.
// The byte goes on the data stream before the error stream opens: the
// pair's forward has not started, so it must wait in the stream's buffer
// and needs budget (a forward waiting on an empty buffer would take it
// straight to its pod's socket).
func spdyEchoes(t *testing.T, budget *Budget, stall time.Duration, limits *limitLog, failure func() string) {
	t.Helper()
	r := newSessionRigWith(t, Config{}, SPDYOptions{Global: budget, StallTimeout: stall, OnLimit: limits.add})
	port := echoPod(t)
	data, err := r.client.CreateStream(streamHeaders(StreamTypeData, port, "0"))
	if err != nil {
		t.Fatalf("create data stream: %v", err)
	}
	if _, err := data.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	errs, err := r.client.CreateStream(streamHeaders(StreamTypeError, port, "0"))
	if err != nil {
		t.Fatalf("create error stream: %v", err)
	}
	errs.Close()
	echoed := make(chan error, 1)
	go func() { _, err := io.ReadFull(data, make([]byte, 1)); echoed <- err }()
	select {
	case err := <-echoed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal(failure())
	}
}

// TestStaleV4PortFreesTheSharedBudgetForSPDY: a v4 client sends exactly
// the shared budget to a port whose pod does not accept (the dial hangs),
// and then goes quiet: the session's reader has put it all and waits for
// the next message, not for the budget, so it never resets anything. A
// SPDY connection's reader that then waits for the budget with nothing of
// its own must, after StallTimeout, reset the stale v4 port: its queued
// bytes leave the budget, its dial is given up, nothing is written on its
// error channel, and the WebSocket closes normally as its only port has
// ended. With the bug the SPDY connection waited for as long as the port
// stayed open: v4 sessions held the budget and took no part in reclaiming
// it.
func TestStaleV4PortFreesTheSharedBudgetForSPDY(t *testing.T) {
	const (
		global = 128 << 10
		stall  = 300 * time.Millisecond
	)
	budget := NewBudget(global)
	var v4Limits, spdyLimits limitLog
	v4Obs := newCountingObserver()
	ws := v4Peer(t, ChannelConfig{Ports: []uint16{unacceptingPod(t)}, Dial: loopbackDial, Global: budget,
		StallTimeout: stall, OnLimit: v4Limits.add, Observer: v4Obs})
	for range 2 {
		if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{0}, make([]byte, global/2)...)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the stale port to fill the shared budget", budget.Exhausted)

	spdyEchoes(t, budget, stall, &spdyLimits, func() string {
		return fmt.Sprintf("the SPDY byte not echoed 10s after the v4 port went stale (budget %d of %d used); limits v4 %v, spdy %v",
			budget.Used(), global, &v4Limits, &spdyLimits)
	})
	expectNormalCloseOnly(t, ws)
	if !v4Limits.has(LimitStreamBuffer) || v4Limits.has(LimitGlobalBuffer) || !spdyLimits.has(LimitGlobalBuffer) {
		t.Errorf("limits v4 %v, spdy %v; want %s (only) on v4 and %s on spdy", &v4Limits, &spdyLimits, LimitStreamBuffer, LimitGlobalBuffer)
	}
	if n := v4Obs.get(func(o *countingObserver) int { return o.ended[ResultReset] }); n != 1 {
		t.Errorf("v4 forwards ended as reset: %d, want 1", n)
	}
	waitUntil(t, "the stale port's bytes to leave the budget", func() bool { return budget.Used() == 0 })
}

// TestStaleV4PortWithPodNotReadingIsReset: a v4 port whose pod accepted
// but reads nothing fills the shared budget (its inbox is as large) once
// the pod's socket is full, while its client keeps sending. With a SPDY
// connection's reader waiting for the budget too, one of the two readers
// must, after StallTimeout, reset the stale port: its pod connection is
// reset at once (its forward was blocked writing to the pod), nothing
// is written on its error channel, and the SPDY connection goes on. With
// the bug both waited for as long as the port stayed open.
func TestStaleV4PortWithPodNotReadingIsReset(t *testing.T) {
	const (
		global = channelInbox
		stall  = 300 * time.Millisecond
	)
	budget := NewBudget(global)
	var v4Limits, spdyLimits limitLog
	v4Obs := newCountingObserver()
	stuck, podConns := silentPod(t)
	ws := v4Peer(t, ChannelConfig{Ports: []uint16{stuck}, Dial: smallBufferDial, Global: budget,
		StallTimeout: stall, OnLimit: v4Limits.add, Observer: v4Obs})
	go func() { // the client sends until the WebSocket closes: more than the pod's socket and the budget take
		msg := append([]byte{0}, make([]byte, 64<<10)...)
		for ws.WriteMessage(websocket.BinaryMessage, msg) == nil {
		}
	}()
	waitUntil(t, "the stale port to fill the shared budget", budget.Exhausted)

	spdyEchoes(t, budget, stall, &spdyLimits, func() string {
		return fmt.Sprintf("the SPDY byte not echoed 10s after the v4 port filled the budget (budget %d of %d used); limits v4 %v, spdy %v",
			budget.Used(), global, &v4Limits, &spdyLimits)
	})

	expectNormalCloseOnly(t, ws) // before the pod reads: a read makes the port live again
	pod := <-podConns
	pod.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Reset, not closed: bytes the pod had not taken were queued for it.
	if _, err := io.Copy(io.Discard, pod); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the stale port's pod connection: %v, want it reset; limits v4 %v, spdy %v; budget %d", err, &v4Limits, &spdyLimits, budget.Used())
	}
	if !v4Limits.has(LimitStreamBuffer) {
		t.Errorf("limits v4 %v, spdy %v; want %s on v4", &v4Limits, &spdyLimits, LimitStreamBuffer)
	}
	if n := v4Obs.get(func(o *countingObserver) int { return o.ended[ResultReset] }); n != 1 {
		t.Errorf("v4 forwards ended as reset: %d, want 1", n)
	}
	waitUntil(t, "the stale port's bytes to leave the budget", func() bool { return budget.Used() == 0 })
}

// TestStaleV4PortWithFullQueueIsReset: with no shared budget to wait for,
// a v4 port whose pod reads nothing fills its own queue, and the
// session's reader waits on it. After StallTimeout the reader resets the
// port, as a SPDY stream's reader does: its pod connection is reset,
// nothing is written on its error channel, the reset counts as
// stream_buffer. With the bug the reader waited for as long as the pod
// did not read, and the session's other ports with it.
func TestStaleV4PortWithFullQueueIsReset(t *testing.T) {
	const stall = 300 * time.Millisecond
	var limits limitLog
	obs := newCountingObserver()
	stuck, podConns := silentPod(t)
	ws := v4Peer(t, ChannelConfig{Ports: []uint16{stuck}, Dial: smallBufferDial,
		StallTimeout: stall, OnLimit: limits.add, Observer: obs})
	go func() { // until the WebSocket closes: more than the pod's socket and the port's queue take
		msg := append([]byte{0}, make([]byte, 64<<10)...)
		for ws.WriteMessage(websocket.BinaryMessage, msg) == nil {
		}
	}()
	expectNormalCloseOnly(t, ws)
	pod := <-podConns
	pod.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, pod); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the stale port's pod connection: %v, want it reset (bytes it had not taken were queued for it); limits %v", err, &limits)
	}
	if !limits.has(LimitStreamBuffer) {
		t.Errorf("limits %v; want %s", &limits, LimitStreamBuffer)
	}
	if n := obs.get(func(o *countingObserver) int { return o.ended[ResultReset] }); n != 1 {
		t.Errorf("v4 forwards ended as reset: %d, want 1", n)
	}
}

// TestStaleSPDYStreamFreesTheSharedBudgetForV4: a SPDY data stream that
// nobody reads (its error stream never comes, so no pod is dialed) fills
// the shared budget, and then its client goes quiet, so its connection's
// reader never waits and never resets it. A v4 session's reader that then
// waits for the budget must, after StallTimeout, reset the stale stream
// (FLOW_CONTROL_ERROR) and go on. With the bug it polled the budget for
// as long as the stream stayed open.
func TestStaleSPDYStreamFreesTheSharedBudgetForV4(t *testing.T) {
	const (
		global = 128 << 10
		stall  = 300 * time.Millisecond
	)
	budget := NewBudget(global)
	var v4Limits, spdyLimits limitLog
	r := newSessionRigWith(t, Config{CreationTimeout: time.Minute},
		SPDYOptions{Global: budget, StallTimeout: stall, OnLimit: spdyLimits.add})
	data, err := r.client.CreateStream(streamHeaders(StreamTypeData, 1, "lonely"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := data.Write(make([]byte, global)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the stale stream to fill the shared budget", budget.Exhausted)

	ws := v4Peer(t, ChannelConfig{Ports: []uint16{echoPod(t)}, Dial: loopbackDial, Global: budget,
		StallTimeout: stall, OnLimit: v4Limits.add})
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte{0, 'x'}); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil || !bytes.Equal(msg, []byte{0, 'x'}) {
		t.Fatalf("v4 echo: %q, %v; want %q (budget %d of %d used); limits v4 %v, spdy %v",
			msg, err, []byte{0, 'x'}, budget.Used(), global, &v4Limits, &spdyLimits)
	}

	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, data); ended <- err }()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the stale SPDY stream was not reset")
	}
	if !spdyLimits.has(LimitStreamBuffer) || !v4Limits.has(LimitGlobalBuffer) {
		t.Errorf("limits v4 %v, spdy %v; want %s on v4 and %s on spdy", &v4Limits, &spdyLimits, LimitGlobalBuffer, LimitStreamBuffer)
	}
	waitUntil(t, "the stale stream's bytes to leave the budget", func() bool { return budget.Used() == 0 })
}
