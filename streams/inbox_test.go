package streams

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestInboxOrderAcrossWrap(t *testing.T) {
	b := newInbox(7)
	want := []byte("the quick brown fox jumps over the lazy dog")
	go func() {
		for i := 0; i < len(want); i += 5 {
			b.put(want[i:min(i+5, len(want))])
		}
		b.finish(io.EOF)
	}()
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

func TestInboxAbortReleasesBlockedPut(t *testing.T) {
	b := newInbox(4)
	done := make(chan struct{})
	go func() {
		b.put([]byte("more than four bytes"))
		close(done)
	}()
	buf := make([]byte, 2)
	if n, _ := b.Read(buf); n != 2 { // the writer is now blocked on a full inbox
		t.Fatalf("read %d bytes, want 2", n)
	}
	b.abort(ErrReset)
	<-done
	if _, err := b.Read(buf); !errors.Is(err, ErrReset) {
		t.Fatalf("Read after abort: %v, want ErrReset", err)
	}
	b.put([]byte("dropped")) // must not block
}
