package spdy

import (
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Client→pod without a copy (Linux): while a stream's consumer waits on
// an empty buffer for bytes to write to its pod, the connection's reader
// writes the stream's DATA payloads to the pod's socket itself: what its
// read buffer already holds with one write, the rest spliced from the
// client's socket through a pipe, so those bytes never enter user space,
// and no goroutine hands them to another. It never waits on the pod:
// once the pod's socket cannot take a write whole, the bytes read go into
// the stream's buffer, and the rest of the frame follows them there, as
// every frame does without this path (pipe's sink keeps the order).

// WriteChunkToSocket is WriteChunkTo for a consumer whose w writes to
// sock, the pod's socket: while the stream's buffer is empty, the
// connection's reader may write the client's bytes to sock itself, and
// they are returned as if w had written them (with the reader's error
// writing them as w's). On a connection whose frames are not read from a
// plain TCP socket it is WriteChunkTo.
func (s *Stream) WriteChunkToSocket(w io.Writer, sock syscall.Conn) (n int, rerr, werr error) {
	if !s.c.spliceIn {
		return s.in.WriteChunkTo(w)
	}
	rc, err := sock.SyscallConn()
	if err != nil {
		return s.in.WriteChunkTo(w)
	}
	return s.in.WriteChunkToSink(w, rc)
}

// readDirect writes what the pod's socket takes at once of a DATA frame's
// next n bytes for s straight to it, when s's consumer offers that socket
// (WriteChunkToSocket: its buffer is empty). Bytes it read from the client
// that the pod's socket did not take go into s's buffer. It returns the
// bytes of the frame still to read, and an error that ends the
// connection (reading from the client failed).
func (c *Conn) readDirect(s *Stream, n int64) (int64, error) {
	if !c.spliceIn || n == 0 {
		return n, nil
	}
	sink := s.in.TakeSink()
	if sink == nil {
		return n, nil
	}
	moved, left, werr, rerr := c.writeToPod(s, sink, int(n))
	s.in.SinkDone(moved, werr)
	c.passedOn(s, moved)
	n -= int64(moved)
	if left == nil {
		return n, rerr
	}
	n -= int64(left.n)
	err := c.deliver(s, pipeReader{left}, int64(left.n))
	putSplicePipe(left) // kept only if emptied
	return n, err
}

// writeToPod writes up to n bytes of the current DATA frame to the
// socket sink, s's consumer's, without waiting on it. It returns the
// bytes sink took; the pipe holding bytes it read from the client that
// sink did not take (nil when there are none); sink's error; and the
// error reading from the client, which ends the connection. While it
// reads from the client, s's consumer is told of the bytes written so
// far should the stream be aborted meanwhile; once it is, nothing more
// is written to sink.
func (c *Conn) writeToPod(s *Stream, sink syscall.RawConn, n int) (moved int, left *splicePipe, werr, rerr error) {
	if b := min(c.br.Buffered(), n); b > 0 {
		buf, _ := c.br.Peek(b)
		k, err := sendNow(sink, buf)
		c.br.Discard(k)
		moved += k
		if err != nil || k < b {
			return moved, nil, err, nil
		}
	}
	if moved == n {
		return moved, nil, nil, nil
	}
	// The read buffer is empty: the rest is the socket's.
	rc, err := c.tcp.SyscallConn()
	if err != nil {
		return moved, nil, nil, nil
	}
	p, err := getSplicePipe()
	if err != nil {
		return moved, nil, nil, nil // out of file descriptors: the buffer takes the rest
	}
	for moved < n {
		// Reading from the client may wait for it: an abort meanwhile
		// returns to the consumer at once, with what was written so far.
		s.in.SinkWait(moved)
		rerr := spliceIn(rc, p, n-moved)
		resumed := s.in.SinkResume()
		if rerr != nil {
			p.destroy()
			return moved, nil, nil, rerr
		}
		if !resumed {
			return moved, p, nil, nil // aborted meanwhile: the buffer drops p's bytes
		}
		k, err := spliceNow(sink, p)
		moved += k
		if err != nil || p.n > 0 {
			return moved, p, err, nil
		}
	}
	c.spliced = true
	putSplicePipe(p)
	return moved, nil, nil, nil
}

// spliceIn waits for bytes on the client's socket rc and splices what it
// has, at most n (and spliceChunk), into the empty pipe p.
func spliceIn(rc syscall.RawConn, p *splicePipe, n int) error {
	var serr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			k, err := unix.Splice(int(fd), nil, p.w, nil, min(n, spliceChunk), unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false
			case err != nil:
				serr = os.NewSyscallError("splice from client", err)
			case k == 0:
				serr = io.ErrUnexpectedEOF // the connection ended inside a frame
			default:
				p.n = int(k)
			}
			return true
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// sendNow writes what it can of b to the socket sink without waiting for
// room, and returns how much that was.
func sendNow(sink syscall.RawConn, b []byte) (int, error) {
	n := 0
	return now(sink, "write to pod", func() int { return len(b) - n }, func(fd int) (int, error) {
		k, err := unix.SendmsgN(fd, b[n:], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		n += max(k, 0)
		return k, err
	})
}

// spliceNow splices what it can of p's bytes to the socket sink without
// waiting for room, and returns how much that was; p.n keeps the rest.
func spliceNow(sink syscall.RawConn, p *splicePipe) (int, error) {
	return now(sink, "splice to pod", func() int { return p.n }, func(fd int) (int, error) {
		k, err := unix.Splice(p.r, nil, fd, nil, p.n, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
		p.n -= max(int(k), 0)
		return int(k), err
	})
}

// now calls op, which writes to the socket sink, while left says bytes
// are left, until the socket has no room (EAGAIN) or op fails: it never
// waits for room. It returns the bytes op moved.
func now(sink syscall.RawConn, what string, left func() int, op func(fd int) (int, error)) (n int, err error) {
	var serr error
	err = sink.Write(func(fd uintptr) bool {
		for left() > 0 {
			k, err := op(int(fd))
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return true
			case err != nil:
				serr = os.NewSyscallError(what, err)
				return true
			}
			n += k
		}
		return true
	})
	if err != nil {
		return n, err
	}
	return n, serr
}

// readHeader reads the next frame's header. After a frame whose end was
// spliced out of the socket, the read buffer is empty, and the header is
// read from the socket alone: a buffered read would take the next
// frame's payload into user space with it.
func (c *Conn) readHeader(hdr []byte) error {
	if c.spliced && c.br.Buffered() == 0 {
		c.spliced = false
		_, err := io.ReadFull(c.nc, hdr)
		return err
	}
	_, err := io.ReadFull(c.br, hdr)
	return err
}
