package main

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/portforwardd/portforwardd/nsenter"
)

// serveRelay runs the floor of any user-space port-forward: for each
// connection it dials the pod the way portforwardd does and copies both
// ways with plain read and write calls into 128 KiB buffers (not io.Copy,
// which would splice), with no framing, no streams and no HTTP. It never
// returns.
func serveRelay(listen, netnsPath string, port int) error {
	ln, err := net.Listen("tcp4", listen)
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String()) // the parent reads the address
	target := nsenter.Target{Path: netnsPath}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			pod, err := nsenter.Dialer{}.Dial(context.Background(), target, uint16(port))
			if err != nil {
				return
			}
			defer pod.Close()
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); relay(pod, c.(*net.TCPConn)) }()
			go func() { defer wg.Done(); relay(c.(*net.TCPConn), pod) }()
			wg.Wait()
		}()
	}
}

// relay copies src to dst with read and write, then half-closes dst.
func relay(dst, src *net.TCPConn) {
	buf := make([]byte, 128<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			dst.CloseWrite()
			return
		}
	}
}
