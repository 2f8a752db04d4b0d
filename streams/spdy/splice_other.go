//go:build !linux

package spdy

import (
	"errors"
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
