package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

const gib = 1 << 30

// randomStream returns a reader of n random bytes; after it is drained,
// want() gives their sha256.
func randomStream(n int64) (io.Reader, func() [32]byte) {
	h := sha256.New()
	r := io.TeeReader(io.LimitReader(rand.Reader, n), h)
	return r, func() (s [32]byte) { copy(s[:], h.Sum(nil)); return }
}

func hashAll(r io.Reader) (n int64, sum [32]byte, err error) {
	h := sha256.New()
	n, err = io.Copy(h, r)
	copy(sum[:], h.Sum(nil))
	return n, sum, err
}

// TestBulkGiB moves 1 GiB each way through client-go's port-forward and
// checks sha256, with the pod bound to 127.0.0.1 and to 0.0.0.0.
func TestBulkGiB(t *testing.T) {
	d := startDaemon(t)
	eachCase(t, func(t *testing.T, tr transport, bindAddr string) {
		t.Run("client_to_pod", func(t *testing.T) {
			p := newPod(t)
			ln := p.listen(t, "tcp4", bindAddr)
			got := serveHashing(ln, nil)
			f := startForward(t, d, tr, p.route(), port(ln))
			c := f.dial(t)
			src, want := randomStream(gib)
			if _, err := io.Copy(c, src); err != nil {
				t.Fatalf("send: %v", err)
			}
			c.CloseWrite()
			r := <-got
			if r.err != nil || r.n != gib || r.sum != want() {
				t.Fatalf("pod received %d bytes (err %v), sha256 match %v; want %d", r.n, r.err, r.sum == want(), gib)
			}
		})
		t.Run("pod_to_client", func(t *testing.T) {
			p := newPod(t)
			ln := p.listen(t, "tcp4", bindAddr)
			sums := serveRandom(ln, gib)
			f := startForward(t, d, tr, p.route(), port(ln))
			c := f.dial(t)
			n, sum, err := hashAll(c)
			if err != nil || n != gib || sum != <-sums {
				t.Fatalf("client received %d bytes (err %v); want %d with matching sha256", n, err, gib)
			}
		})
	})
}

// hashed is what a pod of serveHashing received.
type hashed struct {
	n   int64
	sum [32]byte
	err error
}

// serveHashing accepts one connection on ln, reads it to its end and
// sends how many bytes came and their sha256 on the channel. With
// progress, it also sends its count there after each read.
func serveHashing(ln net.Listener, progress chan<- int64) <-chan hashed {
	got := make(chan hashed, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- hashed{err: err}
			return
		}
		defer c.Close()
		var r io.Reader = c
		if progress != nil {
			r = &progressReader{r: c, progress: progress}
		}
		n, sum, err := hashAll(r)
		got <- hashed{n, sum, err}
	}()
	return got
}

// progressReader sends its count on progress after each read.
type progressReader struct {
	r        io.Reader
	n        int64
	progress chan<- int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	k, err := p.r.Read(b)
	if k > 0 {
		p.n += int64(k)
		p.progress <- p.n
	}
	return k, err
}

// serveRandom accepts one connection on ln, sends it size random bytes,
// half-closes it and sends their sha256 on the channel.
func serveRandom(ln net.Listener, size int64) <-chan [32]byte {
	sums := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		src, sum := randomStream(size)
		io.Copy(c, src)
		sums <- sum()
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
	}()
	return sums
}

// TestSPDYDownloadIsSpliced moves 512 MiB pod→client through client-go's
// SPDY port-forward with sha256 and checks that the daemon spliced the
// payload from the pod's socket to the client's: its read and write
// syscalls (rchar, wchar in /proc/PID/io) carry far less than the data.
// Through the WebSocket tunnel, which cannot splice, they carry it all.
func TestSPDYDownloadIsSpliced(t *testing.T) {
	d := startDaemon(t)
	const size = 512 << 20
	eachTransport(t, func(t *testing.T, tr transport) {
		p := newPod(t)
		ln := p.listen(t, "tcp4", "127.0.0.1:0")
		sums := serveRandom(ln, size)
		f := startForward(t, d, tr, p.route(), port(ln))
		c := f.dial(t)
		rchar0, wchar0 := d.ioChars(t)
		n, sum, err := hashAll(c)
		if err != nil || n != size || sum != <-sums {
			t.Fatalf("client received %d bytes (err %v); want %d with matching sha256", n, err, size)
		}
		expectSpliced(t, d, tr, size, rchar0, wchar0)
	})
}

// TestSPDYUploadIsSpliced moves 512 MiB client→pod through client-go's
// SPDY port-forward with sha256, 256 KiB at a time, each sent once the pod
// has read the one before (so the pod's socket has room: a pod that falls
// behind gets the bytes through the stream's buffer), and checks that the
// daemon spliced the payload from the client's socket to the pod's: its
// read and write syscalls carry far less than the data. Through the
// WebSocket tunnel, which cannot splice, they carry it all.
func TestSPDYUploadIsSpliced(t *testing.T) {
	d := startDaemon(t)
	const size, chunk = 512 << 20, 256 << 10
	eachTransport(t, func(t *testing.T, tr transport) {
		p := newPod(t)
		ln := p.listen(t, "tcp4", "127.0.0.1:0")
		progress := make(chan int64, 16) // the pod's count after each read
		got := serveHashing(ln, progress)
		f := startForward(t, d, tr, p.route(), port(ln))
		c := f.dial(t)
		rchar0, wchar0 := d.ioChars(t)
		src, want := randomStream(size)
		for sent := int64(chunk); sent <= size; sent += chunk {
			if _, err := io.CopyN(c, src, chunk); err != nil {
				t.Fatalf("send: %v", err)
			}
			for n := int64(0); n < sent; {
				select {
				case n = <-progress:
				case r := <-got:
					t.Fatalf("the pod's connection ended after %d bytes (err %v)", r.n, r.err)
				}
			}
		}
		c.CloseWrite()
		if r := <-got; r.err != nil || r.n != size || r.sum != want() {
			t.Fatalf("pod received %d bytes (err %v), sha256 match %v; want %d", r.n, r.err, r.sum == want(), size)
		}
		expectSpliced(t, d, tr, size, rchar0, wchar0)
	})
}

// expectSpliced checks, after size bytes went through a forward over tr,
// that the daemon's read and write calls (rchar, wchar in /proc/PID/io,
// rchar0 and wchar0 before) carried under an eighth of them over SPDY,
// which splices, and all of them over the WebSocket tunnel, which cannot.
func expectSpliced(t *testing.T, d *daemon, tr transport, size int64, rchar0, wchar0 int64) {
	t.Helper()
	rchar1, wchar1 := d.ioChars(t)
	moved := (rchar1 - rchar0) + (wchar1 - wchar0)
	t.Logf("user-space copies for %d MiB forwarded: rchar %d KiB, wchar %d KiB", size>>20, (rchar1-rchar0)>>10, (wchar1-wchar0)>>10)
	switch spliced := moved < size/8; {
	case tr.name == "spdy" && !spliced:
		t.Fatalf("the daemon read+wrote %d MiB through user space for %d MiB: not spliced", moved>>20, size>>20)
	case tr.name != "spdy" && spliced:
		t.Fatalf("only %d MiB through user space for %d MiB over the tunnel: the measurement misses copies", moved>>20, size>>20)
	}
}

// TestConcurrentConnections runs 100 forwarded connections at once through
// one session, each with its own data, all verified.
func TestConcurrentConnections(t *testing.T) {
	d := startDaemon(t)
	eachCase(t, func(t *testing.T, tr transport, bindAddr string) {
		p := newPod(t)
		ln := p.listen(t, "tcp4", bindAddr)
		serveEcho(ln)
		f := startForward(t, d, tr, p.route(), port(ln))
		const n, size = 100, 256 << 10
		var wg sync.WaitGroup
		errc := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errc <- echoRandom(f.local, size)
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Error(err)
			}
		}
		if errs := f.errors(); len(errs) != 0 {
			t.Errorf("client-go reported errors: %q", errs)
		}
	})
}

// echoRandom sends size random bytes through the forward to an echo server
// and checks that the same bytes come back.
func echoRandom(local, size int) error {
	c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", local))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, size)
	rand.Read(data)
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	n, sum, err := hashAll(c)
	if err != nil || n != int64(size) || sum != sha256.Sum256(data) {
		return fmt.Errorf("echo of %d bytes: got %d, err %v, sha256 match %v", size, n, err, sum == sha256.Sum256(data))
	}
	return nil
}

// TestIPv6OnlyPod reaches a pod server that listens only on [::1].
func TestIPv6OnlyPod(t *testing.T) {
	d := startDaemon(t)
	eachTransport(t, func(t *testing.T, tr transport) {
		p := newPod(t)
		ln := p.listen(t, "tcp6", "[::1]:0")
		serveEcho(ln)
		f := startForward(t, d, tr, p.route(), port(ln))
		if err := echoRandom(f.local, 1<<20); err != nil {
			t.Fatal(err)
		}
		if errs := f.errors(); len(errs) != 0 {
			t.Errorf("client-go reported errors: %q", errs)
		}
	})
}

// TestNothingListening: the kubelet's error text reaches the client.
func TestNothingListening(t *testing.T) {
	d := startDaemon(t)
	eachTransport(t, func(t *testing.T, tr transport) {
		p := newPod(t)
		ln := p.listen(t, "tcp4", "127.0.0.1:0")
		remote := port(ln)
		ln.Close() // nothing listens on remote any more
		f := startForward(t, d, tr, p.route(), remote)
		c := f.dial(t)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if b, _ := io.ReadAll(c); len(b) != 0 {
			t.Fatalf("read %q from a port nothing listens on", b)
		}
		msgs := forwardErrors.wait(t, f.local)
		want := fmt.Sprintf("An error occurred forwarding: error forwarding port %d to pod %s/%s, uid : ", remote, p.namespace, p.name)
		if !hasSubstring(msgs, want) || !hasSubstring(msgs, "connect: connection refused") {
			t.Fatalf("client-go errors %q; want %q with connection refused", msgs, want)
		}
		if got := d.metric(t, `portforwardd_dial_errors_total{reason="refused"}`); got < 1 {
			t.Errorf("dial_errors_total{reason=refused}: got %v, want at least 1", got)
		}
	})
}
