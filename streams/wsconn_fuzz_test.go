package streams

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzWebSocketNetConn checks the tunnel's byte stream against a model of
// the client's messages: Read returns the concatenation of the binary
// payloads (split over reads of any size), then errTextMessage at a text
// message, io.EOF at a close frame 1000, and another error at any other
// close. A Write is one binary message carrying exactly its bytes.
//
// The script is records of kind, length, payload; kind: 0 binary, 1 text,
// 2 ping, 3 binary in two frames, 4 close (the payload is the close
// frame's: code then reason). A close 1000 ends every script.
func FuzzWebSocketNetConn(f *testing.F) {
	// Three messages per SPDY frame, as client-go's TunnelingConnection
	// writes them; an empty message; a ping between messages.
	f.Add(uint8(7), []byte("\x00\x08\x80\x03\x00\x01\x00\x00\x00\x0a\x00\x00\x00\x00\x03\x00\x04spdy"), []byte("reply"))
	f.Add(uint8(0), []byte("\x00\x02ab\x02\x01p\x03\x05cdefg\x01\x04text\x00\x02no"), []byte{})
	f.Add(uint8(255), []byte("\x00\x01x\x04\x05\x03\xe9bye"), []byte("x"))
	f.Add(uint8(3), []byte("\x04\x02\x03\xe8\x00\x02xx"), []byte("x"))
	f.Add(uint8(1), []byte("\x04\x03\x03\xe8\xff"), []byte{})
	f.Fuzz(func(t *testing.T, readSize uint8, script, write []byte) {
		var in []byte
		var want []byte
		wantErr := "eof" // eof, text or close
		ended := false
		for i := 0; i+1 < len(script) && !ended; {
			kind, n := script[i]%5, int(script[i+1])
			i += 2
			payload := script[i:min(i+n, len(script))]
			i += len(payload)
			switch kind {
			case 0, 3:
				in = append(in, clientMessage(opBinary, payload, kind == 3)...)
				want = append(want, payload...)
			case 1:
				in = append(in, clientMessage(opText, payload, false)...)
				wantErr, ended = "text", true
			case 2:
				in = append(in, clientFrame(true, opPing, payload[:min(len(payload), 125)], 5)...)
			case 4:
				p := payload[:min(len(payload), 125)]
				in = append(in, clientFrame(true, opClose, p, 6)...)
				wantErr, ended = "close", true
				// gorilla checks the code and reason (RFC 6455 §7.4, §5.5.1).
				if len(p) >= 2 && binary.BigEndian.Uint16(p) == 1000 && utf8.Valid(p[2:]) {
					wantErr = "eof"
				}
			}
		}
		if !ended {
			in = append(in, clientFrame(true, opClose, []byte{0x03, 0xe8}, 6)...)
		}

		ws, cli, br := pipeWebSocket(t)
		defer cli.Close()
		conn := WebSocketNetConn(ws)
		defer conn.Close()
		outc := collectServer(br)
		go cli.Write(in)

		if n, err := conn.Write(write); n != len(write) || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", len(write), n, err)
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		var got []byte
		buf := make([]byte, 1+int(readSize))
		var err error
		for err == nil {
			var n int
			n, err = conn.Read(buf)
			if n < 0 || n > len(buf) {
				t.Fatalf("Read of %d bytes returned %d", len(buf), n)
			}
			got = append(got, buf[:n]...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read %q, want the binary payloads %q", got, want)
		}
		switch {
		case wantErr == "eof" && err != io.EOF,
			wantErr == "text" && !errors.Is(err, errTextMessage),
			wantErr == "close" && (err == io.EOF || errors.Is(err, errTextMessage)):
			t.Fatalf("Read ended with %v, want %s", err, wantErr)
		}

		conn.Close()
		cli.Close()
		out := <-outc // the close ends it; partial output is fine here
		if len(out.msgs) == 0 || out.msgs[0].opcode != opBinary || !bytes.Equal(out.msgs[0].payload, write) {
			t.Fatalf("Write(%q): client got %+v first, want one binary message", write, out.msgs[:min(1, len(out.msgs))])
		}
	})
}
