package streams

import (
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// TestWebSocketNetConnAnswersPingsWhileAWriteWaits: a tunnel client that
// pings while it is not reading gets its pong once it reads again, and
// what it sent after the ping is read at once. gorilla's own ping handler
// waited on the reading goroutine, up to a second, for the write to the
// client to finish, and then dropped the pong.
func TestWebSocketNetConnAnswersPingsWhileAWriteWaits(t *testing.T) {
	server, client := wsPair(t)
	big, wrote := writeWhileClientReadsNothing(t, server, client)
	var pongs []string
	client.SetPongHandler(func(data string) error {
		pongs = append(pongs, data)
		return nil
	})
	if err := client.WriteControl(websocket.PingMessage, []byte("still there?"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := client.WriteMessage(websocket.BinaryMessage, []byte("after the ping")); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len("after the ping"))
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "after the ping" {
		t.Fatalf("the server read %q, %v; want what the client sent after its ping", got, err)
	}
	// The client reads again: the message, then the pong; then the
	// server closes.
	readMessageThenClose(t, server, client, big, wrote)
	if len(pongs) != 1 || pongs[0] != "still there?" {
		t.Fatalf("pongs %q, want one for the ping", pongs)
	}
}

// TestWebSocketNetConnAnswersTheLatestPings: of pings piling up while a
// write to a client that does not read waits, the most recent
// maxPendingPongs are answered once it reads again (RFC 6455 §5.5.3 lets
// an endpoint answer only the latest), ahead of them at most one older,
// which the pong writer had taken already. Kills the queue dropping the
// newest pings instead of the oldest, which left the client's latest
// pings, those a keep-alive waits on, unanswered.
func TestWebSocketNetConnAnswersTheLatestPings(t *testing.T) {
	server, client := wsPair(t)
	big, wrote := writeWhileClientReadsNothing(t, server, client)
	var pongs []string
	client.SetPongHandler(func(data string) error {
		pongs = append(pongs, data)
		return nil
	})
	const n = maxPendingPongs + 4
	for i := range n {
		if err := client.WriteControl(websocket.PingMessage, []byte(strconv.Itoa(i)), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.WriteMessage(websocket.BinaryMessage, []byte("after the pings")); err != nil {
		t.Fatal(err)
	}
	// The server has read every ping once it reads what followed them.
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(server, make([]byte, len("after the pings"))); err != nil {
		t.Fatalf("the server read: %v", err)
	}
	readMessageThenClose(t, server, client, big, wrote)
	var want []string
	for i := n - maxPendingPongs; i < n; i++ {
		want = append(want, strconv.Itoa(i))
	}
	got := pongs
	if len(got) == maxPendingPongs+1 {
		// The one the writer had taken when the rest piled up.
		if first, err := strconv.Atoi(got[0]); err != nil || first >= n-maxPendingPongs {
			t.Fatalf("pongs %q: the first is not an older ping's", pongs)
		}
		got = got[1:]
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("pongs %q, want %q, with at most one older ahead", pongs, want)
	}
}

// writeWhileClientReadsNothing starts the server's write of one message
// far larger than the sockets hold, which waits for the client, who reads
// nothing yet, and returns once the message's first bytes are at the
// client: the message, and the channel the write's error comes on.
func writeWhileClientReadsNothing(t *testing.T, server *wsNetConn, client *websocket.Conn) ([]byte, <-chan error) {
	t.Helper()
	big := make([]byte, 64<<20)
	wrote := make(chan error, 1)
	go func() {
		_, err := server.Write(big)
		wrote <- err
	}()
	raw, err := client.UnderlyingConn().(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the message's first bytes at the client", func() bool {
		queued := 0
		raw.Control(func(fd uintptr) { queued, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		return queued > 0
	})
	return big, wrote
}

// readMessageThenClose has the client read the server's message big,
// whose write's error comes on wrote, then closes the server and has the
// client read its close frame (1000).
func readMessageThenClose(t *testing.T, server *wsNetConn, client *websocket.Conn, big []byte, wrote <-chan error) {
	t.Helper()
	if _, msg, err := client.ReadMessage(); err != nil || len(msg) != len(big) {
		t.Fatalf("client read %d bytes, %v; want the %d-byte message", len(msg), err, len(big))
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	server.Close()
	if _, _, err := client.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after the message: %v, want the close", err)
	}
}
