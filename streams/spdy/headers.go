package spdy

import (
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/adler32"
	"io"
	"net/http"
	"strings"
)

// Header limits. Port-forward streams carry three short headers.
const (
	// MaxHeaderBlock bounds the inflated size of one header block.
	MaxHeaderBlock = 64 << 10
	// MaxHeaders bounds the headers of one stream.
	MaxHeaders = 64
	// MaxHeaderField bounds one header name or value.
	MaxHeaderField = 16 << 10
)

// blockSource feeds the compressed header blocks of successive frames to
// the connection's one inflater, as the single zlib stream they are. It
// reports io.EOF when a frame's block runs out before its headers do,
// which is a connection error: the inflater cannot be resumed after that.
type blockSource struct {
	pending []byte
}

func (s *blockSource) Read(p []byte) (int, error) {
	if len(s.pending) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

// headerReader inflates header blocks with the SPDY/3 dictionary and one
// zlib context for the whole connection.
type headerReader struct {
	src     blockSource
	z       io.ReadCloser
	scratch [8]byte
}

// errHeaderLimit marks a header block that broke a per-stream limit but
// was read to its end, so the connection can go on.
var errHeaderLimit = errors.New("header limit exceeded")

// read decodes one header block. A connection error (corrupt or truncated
// zlib data, a block inflating past MaxHeaderBlock) is a *connError; a
// block that is well-formed but breaks a per-stream limit returns the
// headers read so far and an error wrapping errHeaderLimit.
func (r *headerReader) read(block []byte) (http.Header, error) {
	if len(r.src.pending) > MaxHeaderBlock {
		return nil, protocolError("header block data left unused")
	}
	r.src.pending = append(r.src.pending, block...)
	if r.z == nil {
		z, err := zlib.NewReaderDict(&r.src, []byte(headerDictionary))
		if err != nil {
			return nil, protocolError("header block: %v", err)
		}
		r.z = z
	}
	budget := &io.LimitedReader{R: r.z, N: MaxHeaderBlock}
	u32 := func() (uint32, error) {
		if _, err := io.ReadFull(budget, r.scratch[:4]); err != nil {
			return 0, err
		}
		return binary.BigEndian.Uint32(r.scratch[:4]), nil
	}
	fail := func(err error) (http.Header, error) {
		if budget.N <= 0 {
			return nil, protocolError("header block inflates past %d bytes", MaxHeaderBlock)
		}
		return nil, protocolError("header block: %v", err)
	}
	n, err := u32()
	if err != nil {
		return fail(err)
	}
	h := make(http.Header, min(n, MaxHeaders))
	var limitErr error
	for i := uint32(0); i < n; i++ {
		var kv [2]string
		for j := range kv {
			l, err := u32()
			if err != nil {
				return fail(err)
			}
			if l > MaxHeaderField {
				limitErr = fmt.Errorf("%w: header field of %d bytes", errHeaderLimit, l)
			}
			if int64(l) > budget.N {
				return fail(io.ErrUnexpectedEOF)
			}
			if limitErr != nil {
				// Read past it without keeping it, to stay in step.
				if _, err := io.CopyN(io.Discard, budget, int64(l)); err != nil {
					return fail(err)
				}
				continue
			}
			var sb strings.Builder
			sb.Grow(int(l))
			if _, err := io.CopyN(&sb, budget, int64(l)); err != nil {
				return fail(err)
			}
			kv[j] = sb.String()
		}
		if limitErr != nil {
			continue
		}
		if i >= MaxHeaders {
			limitErr = fmt.Errorf("%w: more than %d headers", errHeaderLimit, MaxHeaders)
			continue
		}
		for v := range strings.SplitSeq(kv[1], "\x00") {
			h.Add(kv[0], v)
		}
	}
	if limitErr != nil {
		return h, limitErr
	}
	return h, nil
}

// headerWriter writes the header blocks of one connection's SYN_REPLYs.
// They all carry no headers, so no compressor is needed (zlib's costs
// about 900 KiB per connection): each block is a stored (uncompressed)
// deflate block holding the 4-byte header count, followed by a sync-flush
// marker, all in one zlib stream per connection, whose header names the
// SPDY/3 dictionary, as a compressor with that dictionary would write it.
// Any SPDY/3 inflater reads them.
type headerWriter struct {
	started bool // the zlib header went out
	buf     []byte
}

// emptyBlock returns the next header block with no headers (what every
// SYN_REPLY of port-forward carries). The result is valid until the next
// call.
func (w *headerWriter) emptyBlock() []byte {
	w.buf = w.buf[:0]
	if !w.started {
		w.started = true
		w.buf = append(w.buf, zlibHeader[:]...)
	}
	// A stored block (BFINAL 0, BTYPE 00, padded to the byte) of LEN 4 and
	// NLEN ^4, the header count 0, then an empty stored block: the marker
	// zlib's Z_SYNC_FLUSH writes.
	w.buf = append(w.buf, 0x00, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0xff, 0xff)
	return w.buf
}

// zlibHeader starts a zlib stream (RFC 1950) that uses the SPDY/3
// dictionary: CMF 0x78 (deflate, 32 KiB window), FLG with FDICT and the
// check bits, and the dictionary's Adler-32.
var zlibHeader = func() [6]byte {
	const cmf, fdict = 0x78, 0x20
	flg := byte(fdict | 0x80) // FLEVEL 2, the default
	flg |= byte(31 - (uint16(cmf)<<8|uint16(flg))%31)
	var h [6]byte
	h[0], h[1] = cmf, flg
	binary.BigEndian.PutUint32(h[2:], adler32.Checksum([]byte(headerDictionary)))
	return h
}()
