package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/portforwardd/portforwardd/nsenter"
)

// relayCopies are the plain relay's ways of copying one direction, by the
// name -relay-copy takes. Each copies src to dst until src's EOF; the
// relay then half-closes dst. The main suite's plain relay uses
// "rw-128KiB"; -relays compares them all.
var relayCopies = map[string]func(dst, src *net.TCPConn) error{
	// read and write through one user-space buffer
	"rw-128KiB": func(dst, src *net.TCPConn) error { return readWrite(dst, src, 128<<10) },
	"rw-1MiB":   func(dst, src *net.TCPConn) error { return readWrite(dst, src, 1<<20) },
	// Go's io.Copy between two TCP connections: splice(2) through a 1 MiB
	// pipe, draining what the socket has, then pumping it all out
	"splice": func(dst, src *net.TCPConn) error { _, err := io.Copy(dst, src); return err },
	// splice, but keep draining until the pipe is nearly full, so each
	// pump moves as much as it can
	"splice-fill": func(dst, src *net.TCPConn) error { return spliceFill(dst, src, 1<<20) },
	// splice through a 256 KiB pipe, so less data is in flight (cache)
	"splice-256KiB": func(dst, src *net.TCPConn) error { return spliceFill(dst, src, 256<<10) },
	// splice with two pipes: one goroutine drains the socket into one
	// while another pumps the other out, so reading and writing overlap
	"splice-2pipes": spliceOverlap,
	// splice with blocking system calls on the goroutine's own thread:
	// the kernel wakes the thread directly, with no trip through Go's
	// poller and scheduler per chunk (what a C relay does)
	"splice-blocking": spliceBlocking,
}

// relayCopyNames lists relayCopies in order, for help and errors.
func relayCopyNames() string {
	var names []string
	for n := range relayCopies {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// serveRelay runs the floor of any user-space port-forward: for each
// connection it dials the pod the way portforwardd does and copies both
// ways with copyName's strategy, with no framing, no streams and no HTTP.
// A sockBuf above zero sets both sockets' SO_RCVBUF and SO_SNDBUF. It
// never returns.
func serveRelay(listen, netnsPath string, port int, copyName string, sockBuf int) error {
	// NAME@1: the same copy with GOMAXPROCS=1, so that Go's scheduler
	// does not spin on the second CPU the client and the pod need.
	if n, ok := strings.CutSuffix(copyName, "@1"); ok {
		runtime.GOMAXPROCS(1)
		copyName = n
	}
	copyHalf, ok := relayCopies[copyName]
	if !ok {
		return fmt.Errorf("unknown -relay-copy %q (have %s)", copyName, relayCopyNames())
	}
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
			pc, err := nsenter.Dialer{}.Dial(context.Background(), target, uint16(port))
			if err != nil {
				return
			}
			defer pc.Close()
			client, pod := c.(*net.TCPConn), pc
			if sockBuf > 0 {
				for _, s := range []*net.TCPConn{client, pod} {
					s.SetReadBuffer(sockBuf)
					s.SetWriteBuffer(sockBuf)
				}
			}
			var wg sync.WaitGroup
			half := func(dst, src *net.TCPConn) {
				defer wg.Done()
				if copyHalf(dst, src) != nil {
					src.Close()
					return
				}
				dst.CloseWrite()
			}
			wg.Add(2)
			go half(pod, client)
			go half(client, pod)
			wg.Wait()
		}()
	}
}

// readWrite copies with read and write through a size-byte buffer (not
// io.Copy, which would splice).
func readWrite(dst, src *net.TCPConn, size int) error {
	buf := make([]byte, size)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// splicePipe is a pipe for splice(2), both ends non-blocking, with its
// byte count (this process writes and reads it alone, so the count is
// exact).
type splicePipe struct {
	r, w, n int
}

func newSplicePipe(size int) (*splicePipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, size)
	return &splicePipe{r: fds[0], w: fds[1]}, nil
}

func (p *splicePipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// drain splices from src into p, at most limit bytes in all; with fill
// it keeps going while src has bytes and p has room, otherwise it stops
// after the first splice that moves any. It waits (in Go's poller) only
// while p is empty. eof reports src's EOF.
func (p *splicePipe) drain(src *net.TCPConn, limit int, fill bool) (eof bool, err error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return false, err
	}
	var serr error
	rerr := rc.Read(func(fd uintptr) bool {
		for p.n < limit {
			k, err := unix.Splice(int(fd), nil, p.w, nil, limit-p.n, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return p.n > 0 // wait for src only when there is nothing to pump
			case err != nil:
				serr = err
				return true
			case k == 0:
				eof = true
				return true
			}
			p.n += int(k)
			if !fill {
				return true
			}
		}
		return true
	})
	if rerr != nil {
		return false, rerr
	}
	return eof, serr
}

// pump splices everything in p to dst, waiting in Go's poller while dst
// is full.
func (p *splicePipe) pump(dst *net.TCPConn) error {
	rc, err := dst.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	werr := rc.Write(func(fd uintptr) bool {
		for p.n > 0 {
			k, err := unix.Splice(p.r, nil, int(fd), nil, p.n, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false
			case err != nil:
				serr = err
				return true
			}
			p.n -= int(k)
		}
		return true
	})
	if werr != nil {
		return werr
	}
	return serr
}

// spliceFill copies through one pipe of pipeSize bytes, filling it as far
// as src allows before each pump.
func spliceFill(dst, src *net.TCPConn, pipeSize int) error {
	p, err := newSplicePipe(pipeSize)
	if err != nil {
		return err
	}
	defer p.close()
	for {
		eof, err := p.drain(src, pipeSize, true)
		if err != nil {
			return err
		}
		if err := p.pump(dst); err != nil {
			return err
		}
		if eof {
			return nil
		}
	}
}

// spliceOverlap copies through two 1 MiB pipes: this goroutine drains src
// into one while another pumps the other into dst.
func spliceOverlap(dst, src *net.TCPConn) error {
	const size = 1 << 20
	free, full := make(chan *splicePipe, 2), make(chan *splicePipe, 2)
	for range 2 {
		p, err := newSplicePipe(size)
		if err != nil {
			return err
		}
		defer p.close()
		free <- p
	}
	pumped := make(chan error, 1)
	var failed atomic.Bool
	go func() {
		var err error
		for p := range full {
			if err == nil {
				if err = p.pump(dst); err != nil {
					failed.Store(true)
				}
			}
			free <- p
		}
		pumped <- err
	}()
	var err error
	for !failed.Load() {
		p := <-free
		var eof bool
		eof, err = p.drain(src, size, false)
		if err != nil || p.n == 0 {
			free <- p
			break
		}
		full <- p
		if eof {
			break
		}
	}
	close(full)
	if perr := <-pumped; err == nil {
		err = perr
	}
	return err
}

// spliceBlocking copies through one 1 MiB pipe with blocking splice(2)
// calls: src's socket is switched to blocking mode (Go's poller never
// touches it again in this relay), and each call sleeps in the kernel
// until it can move bytes.
func spliceBlocking(dst, src *net.TCPConn) error {
	const size = 1 << 20
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, size)
	sfd, err := blockingFD(src)
	if err != nil {
		return err
	}
	dfd, err := blockingFD(dst)
	if err != nil {
		return err
	}
	defer unix.Close(sfd)
	defer unix.Close(dfd)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	err = spliceBlockingLoop(dfd, sfd, fds)
	if err != nil {
		// Closing Go's fds would not end the other direction's blocked
		// call (these dups hold the sockets open); shutting them down does.
		unix.Shutdown(sfd, unix.SHUT_RDWR)
		unix.Shutdown(dfd, unix.SHUT_RDWR)
	}
	return err
}

func spliceBlockingLoop(dfd, sfd int, fds [2]int) error {
	const size = 1 << 20
	for {
		n, err := unix.Splice(sfd, nil, fds[1], nil, size, unix.SPLICE_F_MOVE)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		for n > 0 {
			k, err := unix.Splice(fds[0], nil, dfd, nil, int(n), unix.SPLICE_F_MOVE)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return err
			}
			n -= k
		}
	}
}

// blockingFD dups c's socket and puts it (the shared file description,
// so c too) in blocking mode.
func blockingFD(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) {
		fd, derr = unix.Dup(int(s))
		if derr == nil {
			derr = unix.SetNonblock(fd, false)
		}
	}); err != nil {
		return -1, err
	}
	return fd, derr
}
