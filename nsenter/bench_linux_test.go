package nsenter

import (
	"context"
	"net"
	"testing"
)

// BenchmarkDial compares a dial into a namespace (the whole Dial: open and
// check the file, enter, connect, leave) with a plain loopback dial.
func BenchmarkDial(b *testing.B) {
	requireRoot(b)
	_, path := newNetns(b)
	ln := listenIn(b, path, "tcp4", "127.0.0.1:0")
	go acceptAndClose(ln)
	port := uint16(ln.Addr().(*net.TCPAddr).Port)

	direct, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	go acceptAndClose(direct)

	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			c, err := net.Dial("tcp4", direct.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
	b.Run("netns", func(b *testing.B) {
		for b.Loop() {
			c, err := Dialer{}.Dial(context.Background(), Target{Path: path}, port)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}
