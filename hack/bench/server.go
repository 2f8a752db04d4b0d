package main

import (
	"encoding/binary"
	"io"
	"net"
)

// The bench server speaks a one-byte command: 'N' sink of an announced
// 8-byte count (answering the count), 'R' source (read an 8-byte count, write
// that many bytes, close), 'E' echo one byte, 'H' hold (never read again).
func serveBench(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			handleBench(c.(*net.TCPConn))
		}()
	}
}

// benchConn is one connection or stream the bench server answers on.
type benchConn interface {
	io.ReadWriter
	CloseWrite() error
}

var pattern = func() []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}()

// handleBench answers one command; the caller closes c.
func handleBench(c benchConn) {
	cmd := make([]byte, 1)
	if _, err := io.ReadFull(c, cmd); err != nil {
		return
	}
	switch cmd[0] {
	case 'N':
		var want int64
		if binary.Read(c, binary.BigEndian, &want) != nil {
			return
		}
		n, _ := io.CopyN(io.Discard, c, want)
		binary.Write(c, binary.BigEndian, n)
		io.Copy(io.Discard, c)
	case 'R':
		var n int64
		if binary.Read(c, binary.BigEndian, &n) != nil {
			return
		}
		writeN(c, n)
		c.CloseWrite()
		io.Copy(io.Discard, c)
	case 'E':
		c.Write(cmd)
		io.Copy(io.Discard, c)
	case 'H':
		// Never read again: what the client sends piles up in front of
		// this pod for as long as the bench runs.
		select {}
	}
}

func writeN(w io.Writer, n int64) error {
	for n > 0 {
		chunk := pattern
		if int64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		n -= int64(len(chunk))
	}
	return nil
}
