package streams

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// chunkReader hands out data in the chunk sizes it is told, and records
// the buffer size of every Read.
type chunkReader struct {
	data   []byte
	chunks []int // bytes available to each Read; then the rest at once
	sizes  []int
	err    error // returned instead of EOF
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.sizes = append(r.sizes, len(p))
	if len(r.data) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.chunks) > 0 {
		n, r.chunks = min(n, r.chunks[0]), r.chunks[1:]
	}
	n = copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func TestCopyAdaptiveGrowsForBulkAndShrinksWhenQuiet(t *testing.T) {
	const mib = 1 << 20
	data := make([]byte, 8*mib)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	// Bulk (reads fill the buffer), then quiet (100-byte reads), then
	// bulk again.
	chunks := []int{smallBuf, mib, mib, 100, 100, smallBuf, mib}
	r := &chunkReader{data: data, chunks: chunks}
	var out bytes.Buffer
	n, err := CopyAdaptive(&out, r)
	if err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("CopyAdaptive = %d, %v; copied intact: %v", n, err, bytes.Equal(out.Bytes(), data))
	}
	want := []int{smallBuf, largeBuf, largeBuf, largeBuf, smallBuf, smallBuf, largeBuf, largeBuf}
	if len(r.sizes) < len(want) {
		t.Fatalf("read sizes %v, want them to start with %v", r.sizes, want)
	}
	for i, w := range want {
		if r.sizes[i] != w {
			t.Fatalf("read %d had a %d-byte buffer, want %d (sizes %v)", i, r.sizes[i], w, r.sizes[:len(want)])
		}
	}
}

type failWriter struct {
	n   int // bytes accepted before failing
	err error
}

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) <= w.n {
		w.n -= len(p)
		return len(p), nil
	}
	n := w.n
	w.n = 0
	return n, w.err
}

func TestCopyAdaptiveErrors(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 100<<10)
	readErr := errors.New("stream reset")
	if n, err := CopyAdaptive(io.Discard, &chunkReader{data: data, err: readErr}); !errors.Is(err, readErr) || n != int64(len(data)) {
		t.Errorf("read error: CopyAdaptive = %d, %v; want %d, %v", n, err, len(data), readErr)
	}
	writeErr := errors.New("broken pipe")
	if n, err := CopyAdaptive(&failWriter{n: 40 << 10, err: writeErr}, &chunkReader{data: data}); !errors.Is(err, writeErr) || n != 40<<10 {
		t.Errorf("write error: CopyAdaptive = %d, %v; want %d, %v", n, err, 40<<10, writeErr)
	}
	if n, err := CopyAdaptive(&failWriter{n: 10}, &chunkReader{data: data}); !errors.Is(err, io.ErrShortWrite) || n != 10 {
		t.Errorf("short write: CopyAdaptive = %d, %v; want 10, %v", n, err, io.ErrShortWrite)
	}
}

// At most maxLarge copies read with a large buffer at once; the next one
// stays small until one is given back.
func TestCopyBufferLargeOnesAreCapped(t *testing.T) {
	bufs := make([]copyBuffer, maxLarge+1)
	for i := range bufs {
		bufs[i].bytes()
		bufs[i].adapt(smallBuf)
	}
	for i := range maxLarge {
		if got := len(bufs[i].bytes()); got != largeBuf {
			t.Fatalf("copy %d: %d-byte buffer after a full read, want %d", i, got, largeBuf)
		}
	}
	if got := len(bufs[maxLarge].bytes()); got != smallBuf {
		t.Fatalf("copy %d (beyond maxLarge): %d-byte buffer, want %d", maxLarge, got, smallBuf)
	}
	bufs[0].release()
	bufs[maxLarge].adapt(smallBuf)
	if got := len(bufs[maxLarge].bytes()); got != largeBuf {
		t.Fatalf("after one was released: %d-byte buffer, want %d", got, largeBuf)
	}
	for i := range bufs {
		bufs[i].release()
	}
	if n := largeInUse.Load(); n != 0 {
		t.Fatalf("%d large buffers in use after every copy released, want 0", n)
	}
}
