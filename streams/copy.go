package streams

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// Copy buffers. Every copy loop starts with a small buffer and moves to a
// large one while its reads fill the buffer: a quiet connection holds
// 32 KiB, a bulk one reads 1 MiB per call (fewer reads, fewer frames, and
// for an HTTP/2 body fewer WINDOW_UPDATEs). At most maxLarge large buffers
// are in use in the process at once, so bulk copies cost at most 64 MiB
// however many there are; the others stay small.
const (
	smallBuf = 32 << 10
	largeBuf = 1 << 20
	maxLarge = 64
)

var (
	smallPool  = sync.Pool{New: func() any { return new([smallBuf]byte) }}
	largePool  = sync.Pool{New: func() any { return new([largeBuf]byte) }}
	largeInUse atomic.Int32
)

// copyBuffer is the buffer of one copy loop. The zero value is ready; call
// release when the loop ends.
type copyBuffer struct {
	small *[smallBuf]byte
	large *[largeBuf]byte
}

// bytes is the buffer for the next read.
func (b *copyBuffer) bytes() []byte {
	if b.large != nil {
		return b.large[:]
	}
	if b.small == nil {
		b.small = smallPool.Get().(*[smallBuf]byte)
	}
	return b.small[:]
}

// adapt takes the length of the last read: one that filled the small
// buffer moves to a large one if one is free, and one shorter than the
// small buffer moves back.
func (b *copyBuffer) adapt(n int) {
	switch {
	case b.large == nil && n == smallBuf:
		if largeInUse.Add(1) > maxLarge {
			largeInUse.Add(-1)
			return
		}
		b.large = largePool.Get().(*[largeBuf]byte)
		smallPool.Put(b.small)
		b.small = nil
	case b.large != nil && n < smallBuf:
		b.dropLarge()
	}
}

func (b *copyBuffer) dropLarge() {
	largePool.Put(b.large)
	b.large = nil
	largeInUse.Add(-1)
}

// release gives the buffers back.
func (b *copyBuffer) release() {
	if b.large != nil {
		b.dropLarge()
	}
	if b.small != nil {
		smallPool.Put(b.small)
		b.small = nil
	}
}

// CopyAdaptive copies src to dst until src's EOF, like io.Copy, with a
// buffer that grows while the copy is bulk (see copyBuffer). It is meant
// for a src whose every read costs its sender a round of flow control: Go's
// HTTP/2 client sends a WINDOW_UPDATE pair for each body read of 4 KiB or
// more, so a download read 32 KiB at a time costs the server 64 frames per
// MiB to parse. It returns the bytes written and the first error other
// than src's EOF.
func CopyAdaptive(dst io.Writer, src io.Reader) (int64, error) {
	var buf copyBuffer
	defer buf.release()
	var total int64
	for {
		p := buf.bytes()
		n, rerr := src.Read(p)
		if n > 0 {
			w, werr := dst.Write(p[:n])
			total += int64(w)
			if werr == nil && w != n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		buf.adapt(n)
		if errors.Is(rerr, io.EOF) {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}
