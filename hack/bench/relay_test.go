package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
)

// tcpPair returns both ends of one loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// TestRelayCopies runs every copy strategy the relay study compares
// between two real TCP connections: every byte arrives in order, the
// source's EOF ends the copy without error, and nothing more follows.
func TestRelayCopies(t *testing.T) {
	data := make([]byte, 24<<20+12345) // several pipe-fulls, and a ragged end
	rand.Read(data)
	for name, copyHalf := range relayCopies {
		t.Run(name, func(t *testing.T) {
			client, relayIn := tcpPair(t)
			relayOut, pod := tcpPair(t)
			copied := make(chan error, 1)
			go func() {
				err := copyHalf(relayOut, relayIn)
				relayOut.CloseWrite()
				copied <- err
			}()
			go func() {
				client.Write(data)
				client.CloseWrite()
			}()
			got, err := io.ReadAll(pod)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-copied; err != nil {
				t.Fatalf("copy: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes, want %d, or different ones", len(got), len(data))
			}
		})
	}
}

// TestRelayCopyFailsWhenTheDestinationGoes checks that a copy whose
// destination is reset ends with an error instead of spinning or hanging.
func TestRelayCopyFailsWhenTheDestinationGoes(t *testing.T) {
	chunk := make([]byte, 1<<20)
	for name, copyHalf := range relayCopies {
		t.Run(name, func(t *testing.T) {
			client, relayIn := tcpPair(t)
			relayOut, pod := tcpPair(t)
			pod.SetLinger(0)
			pod.Close() // the peer resets on the first bytes that reach it
			go func() {
				for {
					if _, err := client.Write(chunk); err != nil {
						return
					}
				}
			}()
			if err := copyHalf(relayOut, relayIn); err == nil {
				t.Fatal("copy to a reset connection returned no error")
			}
		})
	}
}
