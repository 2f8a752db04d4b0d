package streams

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// In-memory WebSockets for the fuzz targets: the server end is gorilla's,
// upgraded over a net.Pipe; the client end is raw, so a target can send
// any frame (masked, as RFC 6455 §5.3 requires of clients) and read every
// frame the server sends.

// WebSocket opcodes (RFC 6455 §5.2).
const (
	opContinuation = 0
	opText         = 1
	opBinary       = 2
	opClose        = 8
	opPing         = 9
	opPong         = 10
)

// hijackWriter is the http.ResponseWriter of an in-memory upgrade.
type hijackWriter struct {
	conn net.Conn
	h    http.Header
}

func (w *hijackWriter) Header() http.Header         { return w.h }
func (w *hijackWriter) Write(p []byte) (int, error) { return w.conn.Write(p) }
func (w *hijackWriter) WriteHeader(int)             {}
func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.conn, bufio.NewReadWriter(bufio.NewReader(w.conn), bufio.NewWriter(w.conn)), nil
}

// pipeWebSocket returns the server's WebSocket and the client's end of the
// pipe under it, with a reader positioned after the 101.
func pipeWebSocket(t *testing.T) (*websocket.Conn, net.Conn, *bufio.Reader) {
	t.Helper()
	srv, cli := net.Pipe()
	req := httptest.NewRequest(http.MethodGet, "/portForward/default/web?port=80", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	br := bufio.NewReader(cli)
	resp := make(chan error, 1)
	go func() { // net.Pipe writes wait for a reader
		r, err := http.ReadResponse(br, req)
		if err == nil && r.StatusCode != http.StatusSwitchingProtocols {
			err = fmt.Errorf("status %d", r.StatusCode)
		}
		resp <- err
	}()
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	ws, err := up.Upgrade(&hijackWriter{conn: srv, h: http.Header{}}, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-resp; err != nil {
		t.Fatalf("upgrade response: %v", err)
	}
	return ws, cli, br
}

// clientFrame encodes one masked client frame.
func clientFrame(fin bool, opcode byte, payload []byte, key uint32) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = binary.BigEndian.AppendUint32(b, key)
	var mask [4]byte
	binary.BigEndian.PutUint32(mask[:], key)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	return b
}

// clientMessage encodes a data message, split into two frames when split
// is set (a continuation frame carries the rest).
func clientMessage(opcode byte, payload []byte, split bool) []byte {
	if !split {
		return clientFrame(true, opcode, payload, 0x1234abcd)
	}
	half := len(payload) / 2
	return append(clientFrame(false, opcode, payload[:half], 0x01020304), clientFrame(true, opContinuation, payload[half:], 0xa0b0c0d0)...)
}

// wsMessage is one message the server sent, frames joined; control frames
// are messages of their own.
type wsMessage struct {
	opcode  byte
	payload []byte
}

// readServerMessages reads the server's frames until the connection ends,
// checking that they are unmasked and well-formed (RFC 6455 §5.2, §5.5).
func readServerMessages(br *bufio.Reader) ([]wsMessage, error) {
	var msgs []wsMessage
	var partial *wsMessage
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if err == io.EOF && partial == nil {
				return msgs, nil
			}
			return msgs, fmt.Errorf("connection ended inside a frame or message: %w", err)
		}
		fin, opcode := hdr[0]&0x80 != 0, hdr[0]&0x0f
		if hdr[0]&0x70 != 0 || hdr[1]&0x80 != 0 {
			return msgs, fmt.Errorf("frame header %x: reserved bits or mask set", hdr)
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(br, b[:]); err != nil {
				return msgs, err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(br, b[:]); err != nil {
				return msgs, err
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		if n > 64<<20 {
			return msgs, fmt.Errorf("frame of %d bytes", n)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			return msgs, fmt.Errorf("truncated frame: %w", err)
		}
		switch {
		case opcode >= opClose:
			if !fin || n > 125 {
				return msgs, fmt.Errorf("control frame %d: fin %v, %d bytes", opcode, fin, n)
			}
			msgs = append(msgs, wsMessage{opcode, payload})
		case opcode == opContinuation:
			if partial == nil {
				return msgs, errors.New("continuation frame outside a message")
			}
			partial.payload = append(partial.payload, payload...)
		default:
			if partial != nil {
				return msgs, fmt.Errorf("frame %d inside a fragmented message", opcode)
			}
			partial = &wsMessage{opcode, payload}
		}
		if fin && partial != nil && opcode < opClose {
			msgs = append(msgs, *partial)
			partial = nil
		}
	}
}

// collectServer reads the server's messages in the background; the
// result arrives once the server closes the connection.
func collectServer(br *bufio.Reader) <-chan serverOutput {
	c := make(chan serverOutput, 1)
	go func() {
		msgs, err := readServerMessages(br)
		c <- serverOutput{msgs, err}
	}()
	return c
}

type serverOutput struct {
	msgs []wsMessage
	err  error
}

func waitOutput(t *testing.T, c <-chan serverOutput) serverOutput {
	t.Helper()
	select {
	case out := <-c:
		if out.err != nil {
			t.Fatalf("server output after %d messages: %v", len(out.msgs), out.err)
		}
		return out
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not close the WebSocket")
	}
	panic("unreachable")
}
