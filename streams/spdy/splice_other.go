//go:build !linux

package spdy

import (
	"errors"
	"io"
	"syscall"
)

// CanSplice reports false: splice(2) is Linux's, so off Linux a stream's
// bytes always go through Write.
func (s *Stream) CanSplice() bool { return false }

// SpliceChunkFrom is Linux's; off Linux CanSplice is false and it moves
// nothing.
func (s *Stream) SpliceChunkFrom(syscall.Conn) (n int, rerr, werr error) {
	return 0, nil, errors.ErrUnsupported
}

// WriteChunkToSocket is WriteChunkTo: off Linux the reader never writes
// to the pod itself.
func (s *Stream) WriteChunkToSocket(w io.Writer, _ syscall.Conn) (n int, rerr, werr error) {
	return s.in.WriteChunkTo(w)
}

// readDirect moves nothing off Linux: all n bytes are left for the buffer.
func (c *Conn) readDirect(_ *Stream, n int64) (int64, error) { return n, nil }

// readHeader reads the next frame's header.
func (c *Conn) readHeader(hdr []byte) error {
	_, err := io.ReadFull(c.br, hdr)
	return err
}
