package streams

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestV4DataMessagesAtMostMaxMessage: a pod's bulk download reaches the
// client in data messages of at most maxMessage bytes, in order, so one
// port cannot hold the WebSocket against the others for long. Kills
// chanPort.Write sending each read from the pod as one message.
func TestV4DataMessagesAtMostMaxMessage(t *testing.T) {
	const size = 8 << 20
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i / 251)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write(want)
		c.Close()
	}()
	ws := v4Peer(t, ChannelConfig{Ports: []uint16{uint16(ln.Addr().(*net.TCPAddr).Port)}, Dial: loopbackDial})
	var got []byte
	largest := 0
	for len(got) < size {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		if len(msg) == 0 || msg[0] != 0 {
			continue // not the data channel
		}
		largest = max(largest, len(msg)-1)
		got = append(got, msg[1:]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the client got %d bytes, not the pod's %d", len(got), size)
	}
	if largest > maxMessage {
		t.Fatalf("a data message of %d bytes, maxMessage is %d", largest, maxMessage)
	}
}

// TestV4ClientCloseDeliversWhatItSent: a client that sends data and then
// closes the WebSocket with a close frame has all of that data reach the
// pod, then EOF, though the pod reads it only after the close was
// answered: what is queued for it is finished, not dropped, and what
// the pod answers then is dropped without ending the forward. Kills the
// reader aborting the ports at a close frame as at a broken connection,
// and chanPort.Write failing once the client has closed.
func TestV4ClientCloseDeliversWhatItSent(t *testing.T) {
	const size = 96 << 10 // within the port's queue (channelInbox)
	port, accepted := silentPod(t)
	obs := newCountingObserver()
	ws := v4Peer(t, ChannelConfig{Ports: []uint16{port}, Dial: smallBufferDial, Observer: obs})
	var pod net.Conn
	select {
	case pod = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the pod was not dialed")
	}
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i / 253)
	}
	for b := want; len(b) > 0; b = b[min(len(b), 16<<10):] {
		if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{0}, b[:min(len(b), 16<<10)]...)); err != nil {
			t.Fatal(err)
		}
	}
	if err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// The server answers the close frame once its reader has every
	// message before it; only then does the pod read.
	for {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			break
		}
		if err != nil {
			t.Fatalf("waiting for the server's close frame: %v", err)
		}
	}
	// What the pod answers now has no reader: it is dropped, and the
	// forward goes on.
	if _, err := pod.Write([]byte("an answer after the close")); err != nil {
		t.Fatal(err)
	}
	pod.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(pod)
	pod.Close() // the port ends
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the pod read %d bytes (%v), want the %d the client sent before its close, then EOF", len(got), err, size)
	}
	waitUntil(t, "the forward to end", func() bool {
		return obs.get(func(o *countingObserver) int { return len(o.ended) }) > 0
	})
	if ok, all := obs.get(func(o *countingObserver) int { return o.ended[ResultOK] }), obs.get(func(o *countingObserver) int { return len(o.ended) }); ok != 1 || all != 1 {
		t.Fatalf("forwards ended ok %d, with %d results in all; want one ok", ok, all)
	}
}

// TestV4UploadKeepsTheSession: the idle timeout counts the client's
// messages, so a session carrying only an upload (the pod answers
// nothing) for three idle timeouts stays open. Kills the reader not
// pushing the deadline out at each message.
func TestV4UploadKeepsTheSession(t *testing.T) {
	const idle = time.Second
	port, accepted := silentPod(t)
	ws := v4Peer(t, ChannelConfig{Ports: []uint16{port}, Dial: loopbackDial, IdleTimeout: idle})
	var pod net.Conn
	select {
	case pod = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the pod was not dialed")
	}
	tick := time.NewTicker(idle / 10)
	defer tick.Stop()
	b := make([]byte, 1)
	for end := time.Now().Add(3 * idle); time.Now().Before(end); <-tick.C {
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte{0, 'x'}); err != nil {
			t.Fatalf("client write: %v", err)
		}
		pod.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(pod, b); err != nil {
			t.Fatalf("pod read: %v", err)
		}
	}
	// Still open: the pod's answer reaches the client.
	if _, err := pod.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil || string(msg) != "\x00y" {
		t.Fatalf("client read %q, %v; want the pod's answer on channel 0", msg, err)
	}
}

// TestV4DialErrorIsWrittenOnTheErrorChannel: a port whose dial fails gets
// the kubelet's text on its own error channel, and the other ports go on:
// the session ends (close 1000) only once the others have ended too.
// Kills the failed dial ending its port with nothing said.
func TestV4DialErrorIsWrittenOnTheErrorChannel(t *testing.T) {
	port, accepted := silentPod(t)
	dial := func(ctx context.Context, p uint16) (PodConn, error) {
		if p == 81 {
			return nil, errors.New("dial localhost:81: connection refused")
		}
		return loopbackDial(ctx, p)
	}
	ws := v4Peer(t, ChannelConfig{Ports: []uint16{81, port}, Pod: "ns/web", UID: "u-1", Dial: dial})
	want := "error forwarding port 81 to pod ns/web, uid u-1: dial localhost:81: connection refused"
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read the error channel: %v", err)
	}
	if len(msg) == 0 || msg[0] != 1 || string(msg[1:]) != want {
		t.Fatalf("got %q, want %q on channel 1", msg, want)
	}
	// The other port still forwards: its pod ends it, and the session.
	var pod net.Conn
	select {
	case pod = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the second port's pod was not dialed")
	}
	if _, err := pod.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	pod.Close()
	var got []byte
	for {
		_, msg, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure {
			break
		}
		if err != nil {
			t.Fatalf("websocket: %v, want the second port's data, then close 1000", err)
		}
		if len(msg) == 0 || msg[0] != 2 {
			t.Fatalf("message %q, want only the second port's data", msg)
		}
		got = append(got, msg[1:]...)
	}
	if string(got) != "still here" {
		t.Fatalf("the second port's data: got %q, want %q", got, "still here")
	}
}
