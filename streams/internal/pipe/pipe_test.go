package pipe

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

var errReset = errors.New("reset")

func TestPipeOrderAcrossWrap(t *testing.T) {
	b := New(7)
	want := []byte("the quick brown fox jumps over the lazy dog")
	go func() {
		for i := 0; i < len(want); i += 5 {
			b.Put(want[i:min(i+5, len(want))], 0)
		}
		b.Finish(io.EOF)
	}()
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

func TestPipeAbortReleasesBlockedPut(t *testing.T) {
	b := New(4)
	done := make(chan struct{})
	go func() {
		b.Put([]byte("more than four bytes"), 0)
		close(done)
	}()
	buf := make([]byte, 2)
	if n, _ := b.Read(buf); n != 2 { // the writer is now blocked on a full inbox
		t.Fatalf("read %d bytes, want 2", n)
	}
	b.Abort(errReset)
	<-done
	if _, err := b.Read(buf); !errors.Is(err, errReset) {
		t.Fatalf("Read after abort: %v, want errReset", err)
	}
	b.Put([]byte("dropped"), 0) // must not block
}

func TestPipeStalls(t *testing.T) {
	b := New(4)
	if err := b.Put([]byte("full"), 0); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.Put([]byte("x"), 50*time.Millisecond); !errors.Is(err, ErrStalled) {
		t.Fatalf("Put into a full pipe nobody reads: %v, want ErrStalled", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("gave up after %v, before the stall time", d)
	}
}

func TestPipeOnRead(t *testing.T) {
	b := New(16)
	var total int
	b.OnRead = func(n int) { total += n }
	b.Put([]byte("0123456789"), 0)
	b.Finish(io.EOF)
	io.ReadAll(b)
	if total != 10 {
		t.Fatalf("OnRead saw %d bytes, want 10", total)
	}
}

func TestPipeGrowsOnDemand(t *testing.T) {
	b := New(8 << 20)
	b.Put([]byte("small"), 0)
	if len(b.buf) != minSize {
		t.Fatalf("ring of %d bytes for 5 buffered, want %d", len(b.buf), minSize)
	}
	big := bytes.Repeat([]byte("y"), 100<<10)
	b.Put(big, 0)
	if len(b.buf) < 100<<10+5 || len(b.buf) > 256<<10 {
		t.Fatalf("ring of %d bytes for %d buffered", len(b.buf), 100<<10+5)
	}
	b.Finish(io.EOF)
	got, _ := io.ReadAll(b)
	if !bytes.Equal(got, append([]byte("small"), big...)) {
		t.Fatalf("read %d bytes back, not what was put", len(got))
	}
}
