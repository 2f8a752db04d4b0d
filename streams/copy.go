package streams

import (
	"errors"
	"io"
	"sync"
)

// The buffers of CopyAdaptive.
const (
	adaptiveSmall = 32 << 10
	adaptiveLarge = 1 << 20
)

var largePool = sync.Pool{New: func() any { return new([adaptiveLarge]byte) }}

// CopyAdaptive copies src to dst until src's EOF, like io.Copy, for a src
// whose every read costs its sender a round of flow control. Go's HTTP/2
// client sends a WINDOW_UPDATE pair for each body read of 4 KiB or more,
// so a download read 32 KiB at a time costs the server 64 frames per MiB
// to parse, and both sides the syscalls. CopyAdaptive reads 32 KiB at a
// time until a read fills its buffer, then 1 MiB at a time (a pooled
// buffer) until a read returns less than 32 KiB: a quiet connection holds
// 32 KiB, a bulk one 1 MiB while it is bulk. It returns the bytes written
// and the first error other than src's EOF.
func CopyAdaptive(dst io.Writer, src io.Reader) (int64, error) {
	small := make([]byte, adaptiveSmall)
	var large *[adaptiveLarge]byte
	defer func() {
		if large != nil {
			largePool.Put(large)
		}
	}()
	buf := small
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr == nil && w != n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		switch {
		case large == nil && n == len(buf):
			large = largePool.Get().(*[adaptiveLarge]byte)
			buf = large[:]
		case large != nil && n < adaptiveSmall:
			largePool.Put(large)
			large, buf = nil, small
		}
		if errors.Is(rerr, io.EOF) {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}
