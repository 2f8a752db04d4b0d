package spdy

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// CanSplice reports whether SpliceChunkFrom can move bytes to this
// stream's connection with splice(2): the connection is a plain TCP
// socket (not TLS, not the WebSocket tunnel).
func (s *Stream) CanSplice() bool { return s.c.tcp != nil }

// SpliceChunkFrom waits until src (a socket: the pod's connection) has
// bytes or its EOF, and moves what it has, up to 1 MiB, to the client as
// DATA frames of at most Options.MaxFrame bytes. The bytes go through a
// pipe with splice(2). When the writer is idle they never enter user
// space: each frame's header is sent with MSG_MORE and its payload spliced
// behind it, on the calling goroutine, as a small Write goes direct. When
// other frames are queued, the chunk is read back out of the pipe a frame
// at a time and queued like a Write, so the writer's round robin holds.
// When no pipe can be had (the process is out of file descriptors), the
// chunk, up to one frame, is read into user space and queued instead.
// It returns the bytes moved, src's error (io.EOF at its end) and the
// write's error. Only call it when CanSplice is true.
func (s *Stream) SpliceChunkFrom(src syscall.Conn) (n int, rerr, werr error) {
	c := s.c
	<-s.replied
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err, nil
	}
	var p *splicePipe
	var buf *frameBuffer // when no pipe can be had: the chunk goes through here
	serr := rc.Read(func(fd uintptr) bool {
		if p == nil && buf == nil {
			var perr error
			if p, perr = getSplicePipe(); perr != nil {
				// Out of file descriptors (or pipe memory): copy this
				// chunk through user space rather than fail the stream.
				p, buf = nil, getFrameBuffer(c.opts.MaxFrame)
			}
		}
		for {
			var k int
			var err error
			if buf != nil {
				k, err = unix.Read(int(fd), buf.b)
			} else {
				// int64 on 64-bit Linux, int on 32-bit
				spliced, serr := unix.Splice(int(fd), nil, p.w, nil, spliceChunk, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
				k, err = int(spliced), serr
			}
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				// Nothing to read: an idle stream holds no pipe.
				if p != nil {
					putSplicePipe(p)
					p = nil
				}
				return false
			case err != nil:
				rerr = fmt.Errorf("splice from pod: %w", err)
			case k == 0:
				rerr = io.EOF
			default:
				n = k
			}
			return true
		}
	})
	if serr != nil {
		rerr = serr
	}
	if buf != nil {
		defer putFrameBuffer(buf)
		if n == 0 {
			return 0, rerr, nil
		}
		if err := s.send(buf.b[:n], false); err != nil {
			return 0, rerr, err
		}
		return n, rerr, nil
	}
	if n == 0 {
		if p != nil {
			putSplicePipe(p)
		}
		return 0, rerr, nil
	}
	p.n = n

	c.wmu.Lock()
	if s.localDone || c.wclosed {
		err := ErrReset
		if c.wclosed {
			err = ErrConnClosed
		}
		c.wmu.Unlock()
		p.destroy()
		return 0, rerr, fmt.Errorf("write stream %d: %w", s.id, err)
	}
	if !c.writing && len(c.ctrl) == 0 && len(c.active) == 0 {
		c.writing = true
		c.wmu.Unlock()
		err := c.directDone(c.writeSpliced(s, p))
		if p.n > 0 {
			p.destroy()
		} else {
			putSplicePipe(p)
		}
		if err != nil {
			return 0, rerr, fmt.Errorf("write stream %d: %w", s.id, err)
		}
		return n, rerr, nil
	}
	c.wmu.Unlock()
	if testHookSpliceQueued != nil {
		testHookSpliceQueued()
	}
	// The writer is busy: read the chunk back out of the pipe, a frame at
	// a time, and queue each like a Write, so the writer's round robin
	// holds and the memory it takes stays one frame per stream (32 KiB
	// while 64 streams hold a whole one: getFrameBuffer).
	buf = getFrameBuffer(c.opts.MaxFrame)
	defer putFrameBuffer(buf)
	sent := 0
	for p.n > 0 {
		k, err := io.ReadFull(pipeReader{p}, buf.b[:min(p.n, len(buf.b))])
		if err != nil {
			p.destroy()
			return sent, rerr, fmt.Errorf("write stream %d: read back from the pipe: %v: %w", s.id, err, ErrReset)
		}
		if err := s.send(buf.b[:k], false); err != nil {
			p.destroy()
			return sent, rerr, err
		}
		sent += k
	}
	putSplicePipe(p)
	return sent, rerr, nil
}

// writeSpliced writes a DATA frame header for p's bytes with MSG_MORE, so
// it leaves in the same segment as the payload, then splices the payload
// from p, waiting in Go's poller while the socket is full. It leaves p.n
// at what is still in the pipe (0 when all went).
func (c *Conn) writeSpliced(s *Stream, p *splicePipe) error {
	rc, err := c.tcp.SyscallConn()
	if err != nil {
		return err
	}
	var hdr [frameHeaderLen]byte
	var head []byte // the current frame's header, until it is sent
	frame := 0      // the current frame's payload still to send
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for p.n > 0 || len(head) > 0 {
			if frame == 0 && len(head) == 0 {
				frame = min(p.n, c.opts.MaxFrame)
				head = appendDataHeader(hdr[:0], s.id, 0, frame)
			}
			for len(head) > 0 {
				k, err := unix.SendmsgN(int(fd), head, nil, nil, unix.MSG_MORE|unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
				switch {
				case err == unix.EINTR:
					continue
				case err == unix.EAGAIN:
					return false
				case err != nil:
					werr = err
					return true
				}
				head = head[k:]
			}
			for frame > 0 {
				flags := unix.SPLICE_F_NONBLOCK | unix.SPLICE_F_MOVE
				if p.n > frame {
					flags |= unix.SPLICE_F_MORE
				}
				k, err := unix.Splice(p.r, nil, int(fd), nil, frame, flags)
				switch {
				case err == unix.EINTR:
					continue
				case err == unix.EAGAIN:
					return false
				case err != nil:
					werr = err
					return true
				}
				p.n -= int(k)
				frame -= int(k)
			}
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return err
}

// testHookSpliceQueued, when set (by tests), is called as a spliced chunk
// is queued behind other frames.
var testHookSpliceQueued func()

// spliceChunk is the most SpliceChunkFrom moves at once, and the size
// asked for each pipe (the default /proc/sys/fs/pipe-max-size). The
// kernel's per-user allowance of pipe pages does not bind the daemon: it
// has CAP_SYS_ADMIN to enter pods' network namespaces, which exempts it.
// Where a pipe cannot grow, chunks are smaller; nothing else changes.
const spliceChunk = 1 << 20

// splicePipe is a non-blocking pipe and the bytes this process put in it.
type splicePipe struct {
	r, w      int
	n         int
	idleSince time.Time // when it was last put back
	cleanup   runtime.Cleanup
}

// idlePipes keeps empty pipes between chunks: at most maxIdlePipes of
// them, each for at most pipeIdleTime; the rest are closed at once. So the
// pipes open at rest are bounded, a quiet daemon holds none, and closing
// them never waits for the garbage collector (a sync.Pool, which the race
// detector makes drop a quarter of what it is given, left thousands of
// pipes open until the next collection). The cleanup closes a pipe only
// if a chunk is abandoned by a panic.
var idlePipes struct {
	sync.Mutex
	list  []*splicePipe // the longest idle first
	sweep *time.Timer   // set while list is not empty
}

const (
	// maxIdlePipes bounds idlePipes: enough for the streams splicing at
	// once on a busy node, 32 file descriptors.
	maxIdlePipes = 16
	// pipeIdleTime is how long an idle pipe is kept.
	pipeIdleTime = time.Second
)

func getSplicePipe() (*splicePipe, error) {
	idlePipes.Lock()
	if k := len(idlePipes.list); k > 0 {
		p := idlePipes.list[k-1]
		idlePipes.list = idlePipes.list[:k-1]
		idlePipes.Unlock()
		return p, nil
	}
	idlePipes.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("splice pipe: %w", err)
	}
	// A smaller pipe (the size is refused past the per-user allowance)
	// still works, in smaller chunks.
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, spliceChunk)
	p := &splicePipe{r: fds[0], w: fds[1]}
	p.cleanup = runtime.AddCleanup(p, closePipe, fds)
	return p, nil
}

// putSplicePipe keeps an empty pipe for reuse, or closes it.
func putSplicePipe(p *splicePipe) {
	if p.n == 0 {
		idlePipes.Lock()
		if len(idlePipes.list) < maxIdlePipes {
			p.idleSince = time.Now()
			idlePipes.list = append(idlePipes.list, p)
			if idlePipes.sweep == nil {
				idlePipes.sweep = time.AfterFunc(pipeIdleTime, sweepIdlePipes)
			}
			idlePipes.Unlock()
			return
		}
		idlePipes.Unlock()
	}
	p.destroy()
}

// sweepIdlePipes closes the pipes idle for pipeIdleTime, and comes back
// while any are left.
func sweepIdlePipes() {
	idlePipes.Lock()
	cut := time.Now().Add(-pipeIdleTime)
	k := 0
	for k < len(idlePipes.list) && !idlePipes.list[k].idleSince.After(cut) {
		k++
	}
	old := slices.Clone(idlePipes.list[:k])
	idlePipes.list = slices.Delete(idlePipes.list, 0, k)
	if len(idlePipes.list) > 0 {
		idlePipes.sweep.Reset(pipeIdleTime)
	} else {
		idlePipes.sweep = nil
	}
	idlePipes.Unlock()
	for _, p := range old {
		p.destroy()
	}
}

// destroy closes a pipe.
func (p *splicePipe) destroy() {
	p.cleanup.Stop()
	closePipe([2]int{p.r, p.w})
}

func closePipe(fds [2]int) {
	unix.Close(fds[0])
	unix.Close(fds[1])
}

// pipeReader reads what is in a splice pipe.
type pipeReader struct{ p *splicePipe }

func (r pipeReader) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(r.p.r, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, io.ErrUnexpectedEOF
		}
		r.p.n -= n
		return n, nil
	}
}

// Frame buffers hold a chunk read back from a pipe (or read from the pod,
// when no pipe can be had) while it is queued: a stream whose client does
// not read holds one for as long as it waits. At most maxFullFrames of
// them hold a whole frame at once; the others hold smallFrame bytes, as a
// quiet stream's copy buffer does on the other transports. So the streams
// waiting on clients that read nothing cost 32 KiB each, and at most 8 MiB
// more in all, however many there are.
const (
	maxFullFrames = 64
	smallFrame    = 32 << 10
)

var (
	fullFrameBuffers  sync.Pool
	smallFrameBuffers sync.Pool
	fullFramesInUse   atomic.Int32
)

// frameBuffer is a buffer of getFrameBuffer; b is what to read into.
type frameBuffer struct {
	b    []byte
	full bool // counted in fullFramesInUse
}

// getFrameBuffer returns a buffer of size bytes (a frame), or of
// smallFrame bytes while maxFullFrames whole ones are out.
func getFrameBuffer(size int) *frameBuffer {
	if size > smallFrame {
		if fullFramesInUse.Add(1) <= maxFullFrames {
			if fb, ok := fullFrameBuffers.Get().(*frameBuffer); ok && cap(fb.b) >= size {
				fb.b = fb.b[:size]
				return fb
			}
			return &frameBuffer{b: make([]byte, size), full: true}
		}
		fullFramesInUse.Add(-1)
		size = smallFrame
	}
	if fb, ok := smallFrameBuffers.Get().(*frameBuffer); ok && cap(fb.b) >= size {
		fb.b = fb.b[:size]
		return fb
	}
	return &frameBuffer{b: make([]byte, size)}
}

func putFrameBuffer(fb *frameBuffer) {
	if fb.full {
		fullFramesInUse.Add(-1)
		fullFrameBuffers.Put(fb)
		return
	}
	smallFrameBuffers.Put(fb)
}
