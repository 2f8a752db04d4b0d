package server

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
)

// countingConn is a connection whose reads come from a buffer, counted.
type countingConn struct {
	net.Conn
	r     io.Reader
	reads int
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// readLikeHTTP2 reads the way net/http and its HTTP/2 server do: the
// preface's first 14 bytes with a limited read, then frames as a 9-byte
// header and a payload each.
func readLikeHTTP2(t *testing.T, c net.Conn, frames int) {
	t.Helper()
	head := make([]byte, len(h2cPreface))
	if _, err := io.ReadFull(c, head); err != nil || string(head) != h2cPreface {
		t.Fatalf("preface: %q %v", head, err)
	}
	rest := make([]byte, len("\r\n\r\nSM\r\n\r\n"))
	if _, err := io.ReadFull(c, rest); err != nil {
		t.Fatal(err)
	}
	hdr, payload := make([]byte, 9), make([]byte, 4)
	for range frames {
		if _, err := io.ReadFull(c, hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, payload); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTrackedConnBuffersCleartextHTTP2Only(t *testing.T) {
	const frames = 1000
	// 1000 WINDOW_UPDATE-sized frames (9-byte header, 4-byte payload).
	stream := h2cPreface + "\r\n\r\nSM\r\n\r\n" + strings.Repeat("\x00\x00\x04\x08\x00\x00\x00\x00\x01"+"\x00\x00\x10\x00", frames)
	cc := &countingConn{r: bytes.NewReader([]byte(stream))}
	// The preface's first read is limited to its 14 bytes, as net/http's is.
	tc := &trackedConn{Conn: cc, s: New(Config{})}
	first := make([]byte, len(h2cPreface))
	n, err := tc.Read(first)
	if err != nil || n != len(h2cPreface) {
		t.Fatal(n, err)
	}
	if tc.br == nil {
		t.Fatal("the h2c preface did not switch the connection to buffered reads")
	}
	cc2 := &countingConn{r: bytes.NewReader([]byte(stream))}
	tc2 := &trackedConn{Conn: cc2, s: tc.s}
	readLikeHTTP2(t, tc2, frames)
	if cc2.reads > 10 {
		t.Errorf("%d reads of the connection for %d small frames, want a handful (buffered)", cc2.reads, frames)
	}

	// HTTP/1.1 is left alone: bytes in a buffer of ours would be lost when
	// the connection is hijacked for an upgrade.
	h1 := "GET /portForward/ns/pod HTTP/1.1\r\nHost: x\r\n\r\nPIPELINED"
	cc3 := &countingConn{r: bytes.NewReader([]byte(h1))}
	tc3 := &trackedConn{Conn: cc3, s: tc.s}
	buf := make([]byte, 4096)
	n, _ = tc3.Read(buf)
	if tc3.br != nil || n != len(h1) {
		t.Fatalf("HTTP/1.1: buffered=%v, read %d of %d bytes", tc3.br != nil, n, len(h1))
	}
	if got := unwrapConn(tc3); got != net.Conn(cc3) {
		t.Error("unwrapConn did not return the connection under the tracker")
	}
}
