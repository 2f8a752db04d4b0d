package streams

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestPingWhileTheClientDoesNotRead: a v4 client that pings while it is
// not reading (it uploads before it reads the answer, say) still has its
// messages delivered to the pods. The ping used to wait for the write lock
// on the reading goroutine, and a write to such a client holds the lock
// until the client reads: nothing the client sent after the ping reached
// any pod, and a client that reads only once its upload is through never
// read again. The pong goes out once the client reads, before the close.
func TestPingWhileTheClientDoesNotRead(t *testing.T) {
	ws, cli, br := pipeWebSocket(t)
	defer cli.Close()
	srv, pod := net.Pipe()
	defer pod.Close()
	cfg := ChannelConfig{Ports: []uint16{80}, Pod: "default/web", UID: "uid",
		Dial: func(context.Context, uint16) (PodConn, error) { return pipePodConn{srv}, nil }}
	served := make(chan struct{})
	go func() {
		ServeChannels(context.Background(), ws, cfg)
		close(served)
	}()
	// The two announcements of port 80: a 2-byte frame header, the
	// channel, the port.
	if _, err := io.ReadFull(br, make([]byte, 2*(2+1+2))); err != nil {
		t.Fatal(err)
	}
	// The pod answers before the upload is through: more than the
	// client's reader holds, so the server's write of it waits for the
	// client, who has begun to take it and stops there.
	answer := bytes.Repeat([]byte("answer "), 16<<10)
	wrote := make(chan error, 1)
	go func() {
		_, err := pod.Write(answer)
		wrote <- err
	}()
	if _, err := br.Peek(1); err != nil {
		t.Fatal(err)
	}
	const upload = "the rest of the upload"
	go func() {
		cli.Write(clientFrame(true, opPing, []byte("still there?"), 0x0badf00d))
		cli.Write(clientMessage(opBinary, encodeChannel(false, 0, []byte(upload)), false))
	}()
	pod.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(upload))
	if _, err := io.ReadFull(pod, got); err != nil {
		t.Fatalf("the pod got %q of what the client sent after its ping: %v", got, err)
	}
	if string(got) != upload {
		t.Fatalf("the pod got %q, want %q", got, upload)
	}

	// The client reads again; the pod ends once its answer is taken.
	outc := collectServer(br)
	if err := <-wrote; err != nil {
		t.Fatalf("the pod's answer: %v", err)
	}
	pod.Close()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("ServeChannels did not return after the pod closed")
	}
	out := waitOutput(t, outc)
	var pongs []string
	var back []byte
	for _, m := range out.msgs {
		switch m.opcode {
		case opPong:
			pongs = append(pongs, string(m.payload))
		case opBinary:
			back = append(back, m.payload[1:]...)
		}
	}
	if len(pongs) != 1 || pongs[0] != "still there?" {
		t.Errorf("pongs %q, want one for the ping", pongs)
	}
	if !bytes.Equal(back, answer) {
		t.Errorf("the client got %d bytes of the pod's %d", len(back), len(answer))
	}
	if last := out.msgs[len(out.msgs)-1]; last.opcode != opClose {
		t.Errorf("last message opcode %d, want the close", last.opcode)
	}
}
