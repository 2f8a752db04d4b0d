package streams

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wsPair returns a server-side WebSocketNetConn and the client WebSocket,
// whose reads fail 10 s on rather than hang the test.
func wsPair(t *testing.T) (server *wsNetConn, client *websocket.Conn) {
	t.Helper()
	ch := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		ch <- ws
	}))
	t.Cleanup(srv.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	select {
	case ws := <-ch:
		server = WebSocketNetConn(ws).(*wsNetConn)
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not upgrade")
	}
	t.Cleanup(func() { server.Close() })
	deadline := time.Now().Add(10 * time.Second)
	client.SetReadDeadline(deadline)
	server.SetReadDeadline(deadline)
	return server, client
}

func TestWebSocketNetConnJoinsMessages(t *testing.T) {
	server, client := wsPair(t)
	for _, m := range []string{"spdy", "", " frames", " split", " anywhere"} {
		client.WriteMessage(websocket.BinaryMessage, []byte(m))
	}
	client.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "spdy frames split anywhere" {
		t.Fatalf("read %q, %v; want the joined payloads then EOF", got, err)
	}
}

func TestWebSocketNetConnRejectsText(t *testing.T) {
	server, client := wsPair(t)
	client.WriteMessage(websocket.TextMessage, []byte("text"))
	if _, err := server.Read(make([]byte, 10)); !errors.Is(err, errTextMessage) {
		t.Fatalf("Read after a text message: %v, want errTextMessage", err)
	}
}

func TestWebSocketNetConnWritesBinaryMessagesAndCloses(t *testing.T) {
	server, client := wsPair(t)
	server.Write([]byte("one"))
	server.Write([]byte("two"))
	for _, want := range []string{"one", "two"} {
		typ, msg, err := client.ReadMessage()
		if err != nil || typ != websocket.BinaryMessage || string(msg) != want {
			t.Fatalf("client read %d %q, %v; want binary %q", typ, msg, err, want)
		}
	}
	server.Close()
	if _, _, err := client.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after Close: %v, want close 1000", err)
	}
}

// TestWebSocketNetConnSkipsEmptyMessages: empty binary messages are
// skipped, not read as reads of nothing: Read returns the bytes of the
// next message with something in it. A reader such as bufio.Reader gives
// up (io.ErrNoProgress) after 100 reads of nothing in a row, so a tunnel
// client sending that many empty messages would end its session. Kills
// Read returning 0, nil at an empty message's end.
func TestWebSocketNetConnSkipsEmptyMessages(t *testing.T) {
	server, client := wsPair(t)
	for range 200 {
		client.WriteMessage(websocket.BinaryMessage, nil)
	}
	client.WriteMessage(websocket.BinaryMessage, []byte("spdy"))
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 16)
	if n, err := server.Read(buf); n != 4 || err != nil || string(buf[:n]) != "spdy" {
		t.Fatalf("Read after empty messages: %d %q, %v; want the next message's 4 bytes", n, buf[:n], err)
	}
}
