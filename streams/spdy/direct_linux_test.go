package spdy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/spdystream"
	spdyframe "github.com/moby/spdystream/spdy"
)

// sinkAll moves s to the pod's socket with WriteChunkToSocket until the
// client's FIN, then half-closes the pod, as the pump does; it returns
// the bytes it was told were written.
func sinkAll(s *Stream, pod *net.TCPConn) (int64, error) {
	var total int64
	for {
		n, rerr, werr := s.WriteChunkToSocket(pod, pod)
		total += int64(n)
		if werr != nil {
			return total, werr
		}
		if errors.Is(rerr, io.EOF) {
			return total, pod.CloseWrite()
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// sinkCounted runs sinkAll on a goroutine of its own; its error, or one
// for a count other than want, comes on the channel.
func sinkCounted(s *Stream, pod *net.TCPConn, want int64) <-chan error {
	moved := make(chan error, 1)
	go func() {
		n, err := sinkAll(s, pod)
		if err == nil && n != want {
			err = fmt.Errorf("told of %d bytes written, want %d", n, want)
		}
		moved <- err
	}()
	return moved
}

// upload sends n random bytes on cs, half-closes it, and returns their
// sha256.
func upload(cs *spdystream.Stream, n int64) ([32]byte, error) {
	h := sha256.New()
	_, err := io.Copy(io.MultiWriter(cs, h), io.LimitReader(rand.Reader, n))
	if err == nil {
		err = cs.Close()
	}
	return [32]byte(h.Sum(nil)), err
}

// sunk is what a pod read: its bytes' count and sha256.
type sunk struct {
	n   int64
	sum [32]byte
	err error
}

func readPod(r io.Reader) sunk {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return sunk{n, [32]byte(h.Sum(nil)), err}
}

// rchar is the bytes this process's read calls returned (/proc/self/io).
func rchar(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no rchar in /proc/self/io")
	return 0
}

// TestUploadSplicedToThePod: 64 MiB from a moby/spdystream client to a
// pod, 256 KiB at a time, each sent once the pod has read the one before,
// so the pod's socket always has room. The reader spliced them from the
// client's socket to the pod's: the process's read calls return about
// 64 MiB (the pod's), where they return 128 MiB when the engine also
// reads every byte (checked by the same measure with a consumer that
// reads with Read).
func TestUploadSplicedToThePod(t *testing.T) {
	const size, chunk = 64 << 20, 256 << 10
	for _, consumer := range []string{"WriteChunkToSocket", "Read"} {
		t.Run(consumer, func(t *testing.T) {
			client, _, accepted := pair(t, Options{})
			cs, ss := open(t, client, accepted, "up")
			daemon, pod := podPair(t)
			daemon.SetWriteBuffer(4 << 20)
			pod.SetReadBuffer(4 << 20)
			progress := make(chan int64, 16) // the pod's count after each read
			go func() {
				buf := make([]byte, 1<<20)
				var n int64
				for {
					k, err := pod.Read(buf)
					if k > 0 {
						n += int64(k)
						progress <- n
					}
					if err != nil {
						close(progress)
						return
					}
				}
			}()
			moved := make(chan error, 1)
			go func() {
				var n int64
				var err error
				if consumer == "Read" {
					n, err = io.Copy(daemon, ss)
					if err == nil {
						err = daemon.CloseWrite()
					}
				} else {
					n, err = sinkAll(ss, daemon)
				}
				if err == nil && n != size {
					err = fmt.Errorf("told of %d bytes written, want %d", n, size)
				}
				moved <- err
			}()
			r0 := rchar(t)
			buf := make([]byte, chunk)
			for i := range int64(size / chunk) {
				if _, err := cs.Write(buf); err != nil {
					t.Fatal(err)
				}
				for n := int64(0); n < (i+1)*chunk; {
					var ok bool
					if n, ok = <-progress; !ok {
						t.Fatalf("the pod's connection ended after %d bytes", n)
					}
				}
			}
			cs.Close()
			if err := <-moved; err != nil {
				t.Fatal(err)
			}
			read := rchar(t) - r0
			t.Logf("%s: read calls returned %d MiB for %d MiB", consumer, read>>20, size>>20)
			switch spliced := read < size+size/4; {
			case consumer == "Read" && spliced:
				t.Fatalf("read calls returned %d MiB with the engine reading every byte: the measure misses reads", read>>20)
			case consumer != "Read" && !spliced:
				t.Fatalf("read calls returned %d MiB for %d MiB: not spliced", read>>20, size>>20)
			}
		})
	}
}

// TestUploadToAFullPodGoesThroughTheBuffer: a pod that reads nothing
// while the client sends 32 MiB: once its socket is full, the rest waits
// in the stream's buffer. Then the pod reads, and gets every byte in
// order, and the consumer is told of each exactly once.
func TestUploadToAFullPodGoesThroughTheBuffer(t *testing.T) {
	const size = 32 << 20
	client, _, accepted := pair(t, Options{StreamBuffer: 16 << 20, ConnBuffer: 64 << 20})
	cs, ss := open(t, client, accepted, "full")
	daemon, pod := podPair(t)
	moved := sinkCounted(ss, daemon, size)
	sent := make(chan [32]byte, 1)
	go func() {
		sum, err := upload(cs, size)
		if err != nil {
			t.Error(err)
		}
		sent <- sum
	}()
	waitFor(t, "bytes to wait in the stream's buffer", func() bool { return ss.in.Buffered() > 0 })
	r := readPod(pod)
	if err := <-moved; err != nil {
		t.Fatal(err)
	}
	if sum := <-sent; r.err != nil || r.n != size || r.sum != sum {
		t.Fatalf("pod got %d bytes (err %v), want %d with the client's sha256", r.n, r.err, size)
	}
}

// slowPod reads pod to its end in reads of random sizes, up to 64 KiB,
// yielding between them.
func slowPod(pod *net.TCPConn, seed uint64) sunk {
	rng := mrand.New(mrand.NewPCG(seed, seed))
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		k, err := pod.Read(buf[:1+rng.IntN(len(buf))])
		h.Write(buf[:k])
		runtime.Gosched()
		n += int64(k)
		if err == io.EOF {
			return sunk{n, [32]byte(h.Sum(nil)), nil}
		}
		if err != nil {
			return sunk{n, [32]byte(h.Sum(nil)), err}
		}
	}
}

// TestUploadDirectIntegrity: four streams upload 4 MiB each at once to
// pods that read in random sizes, through daemon sockets with small send
// buffers, so each stream goes back and forth between the pod's socket
// directly and its buffer; every pod gets its client's bytes in order, and
// each consumer is told of each byte exactly once.
func TestUploadDirectIntegrity(t *testing.T) {
	client, _, accepted := pair(t, Options{})
	const streams, size = 4, 4 << 20
	var wg sync.WaitGroup
	for i := range streams {
		cs, ss := open(t, client, accepted, "s"+strconv.Itoa(i))
		daemon, pod := podPair(t)
		daemon.SetWriteBuffer(16 << 10)
		got := make(chan sunk, 1)
		go func() { got <- slowPod(pod, uint64(i)) }()
		moved := sinkCounted(ss, daemon, size)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sum, err := upload(cs, size)
			if err != nil {
				t.Errorf("stream %d: send: %v", i, err)
				return
			}
			if err := <-moved; err != nil {
				t.Errorf("stream %d: %v", i, err)
			}
			if r := <-got; r.err != nil || r.n != size || r.sum != sum {
				t.Errorf("stream %d: pod got %d bytes (err %v), want %d with the client's sha256", i, r.n, r.err, size)
			}
		}()
	}
	wg.Wait()
}

// TestUploadToAResetPodFailsTheWrite: a pod that resets while the client
// uploads fails the consumer's write (whether the reader or the consumer
// was writing when the reset came), and the connection carries another
// stream after it.
func TestUploadToAResetPodFailsTheWrite(t *testing.T) {
	client, _, accepted := pair(t, Options{})
	cs, ss := open(t, client, accepted, "reset")
	daemon, pod := podPair(t)
	moved := make(chan error, 1)
	go func() { _, err := sinkAll(ss, daemon); moved <- err }()
	go io.Copy(cs, rand.Reader) // until the stream is reset
	if _, err := io.ReadFull(pod, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	pod.SetLinger(0)
	pod.Close() // RST
	if err := <-moved; err == nil {
		t.Fatal("the upload to a pod that reset ended without an error")
	}
	ss.Reset()

	cs2, ss2 := open(t, client, accepted, "after")
	daemon2, pod2 := podPair(t)
	go sinkAll(ss2, daemon2)
	cs2.Write([]byte("still fine"))
	cs2.Close()
	if got, err := io.ReadAll(pod2); err != nil || !bytes.Equal(got, []byte("still fine")) {
		t.Fatalf("second stream: pod got %q (err %v), want %q", got, err, "still fine")
	}
}

// TestDirectBytesCreditBothWindows: DATA the reader writes straight to the
// pod's socket is credited to the client's stream window and connection
// window at once, as bytes a consumer read are: a peer that honours flow
// control gets both WINDOW_UPDATEs for half a budget sent.
func TestDirectBytesCreditBothWindows(t *testing.T) {
	const budget = 256 << 10
	const half = budget / 2
	streams := make(chan *Stream, 1)
	f, _, _ := tcpFramer(t, Options{StreamBuffer: budget, ConnBuffer: budget}, func(s *Stream) error { streams <- s; return nil })
	frames := make(chan spdyframe.Frame, 64)
	go func() {
		defer close(frames)
		for {
			fr, err := f.ReadFrame()
			if err != nil {
				return
			}
			frames <- fr
		}
	}()
	if err := f.WriteFrame(syn(1, false)); err != nil {
		t.Fatal(err)
	}
	s := <-streams
	daemon, pod := podPair(t)
	go sinkAll(s, daemon)
	waitFor(t, "the consumer to offer the pod's socket", s.in.Offered)
	if err := f.WriteFrame(&spdyframe.DataFrame{StreamId: 1, Data: make([]byte, half)}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(pod, make([]byte, half)); err != nil {
		t.Fatal(err)
	}
	session, stream := -(budget - 64<<10), 0 // Serve's first session WINDOW_UPDATE is not a credit
	deadline := time.After(10 * time.Second)
	for session < half || stream < half {
		select {
		case fr, ok := <-frames:
			if !ok {
				t.Fatalf("the connection ended with credits session %d, stream %d", session, stream)
			}
			if w, ok := fr.(*spdyframe.WindowUpdateFrame); ok {
				switch w.StreamId {
				case 0:
					session += int(w.DeltaWindowSize)
				case 1:
					stream += int(w.DeltaWindowSize)
				}
			}
		case <-deadline:
			t.Fatalf("credits after %d bytes went to the pod: session %d, stream %d; want %d each", half, session, stream, half)
		}
	}
}

// tcpClient is a client that writes raw frames over loopback TCP (the
// reader splices only from a plain TCP socket); accepted receives each
// stream the server accepts.
func tcpClient(t *testing.T, opts Options) (*spdyframe.Framer, *net.TCPConn, *Conn, chan *Stream) {
	t.Helper()
	server, client := podPair(t) // any loopback TCP pair
	accepted := make(chan *Stream, 16)
	srv := Serve(server, func(s *Stream) error { accepted <- s; return nil }, opts)
	t.Cleanup(func() { client.Close(); srv.Close(); <-srv.Done() })
	f, err := spdyframe.NewFramer(client, client)
	if err != nil {
		t.Fatal(err)
	}
	return f, client, srv, accepted
}

// dataHeader is the header of a DATA frame of length bytes on stream id.
func dataHeader(id uint32, flags uint8, length int) []byte {
	return []byte{byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id), flags, byte(length >> 16), byte(length >> 8), byte(length)}
}

// waitOffered waits until s's consumer offers its sink, the reader idle:
// the probe takes it and gives it back, reporting nothing.
func waitOffered(t *testing.T, s *Stream) {
	t.Helper()
	waitFor(t, "the consumer to offer its socket", func() bool {
		if s.in.TakeSink() == nil {
			return false
		}
		s.in.SinkDone(0, nil)
		return true
	})
}

// TestAbortWhileTheReaderWritesToThePodCountsItsBytes: the reader has
// written the first half of a DATA frame to the pod and waits on the
// client for the rest when the forward aborts (the pump resets the
// stream). The consumer is told of every byte the pod's socket took, as
// it is when it writes them itself: the pump's count and bytes_total
// must not miss bytes the pod got. With the bug it returned the reset
// alone, and the half already in the pod's socket was never counted.
func TestAbortWhileTheReaderWritesToThePodCountsItsBytes(t *testing.T) {
	f, nc, srv, accepted := tcpClient(t, Options{})
	if err := f.WriteFrame(&spdyframe.SynStreamFrame{StreamId: 1, Headers: http.Header{"A": {"b"}}}); err != nil {
		t.Fatal(err)
	}
	ss := <-accepted
	daemon, pod := podPair(t)
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() { n, err := sinkAll(ss, daemon); done <- result{n, err} }()
	waitOffered(t, ss)
	const half = 500
	if _, err := nc.Write(append(dataHeader(1, 0, 2*half), make([]byte, half)...)); err != nil {
		t.Fatal(err)
	}
	pod.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(pod, make([]byte, half)); err != nil {
		t.Fatalf("the pod did not get the frame's first half: %v", err)
	}
	ss.Reset() // the forward aborts
	r := <-done
	if !errors.Is(r.err, ErrReset) {
		t.Fatalf("consumer ended with %v, want the reset", r.err)
	}
	daemon.Close() // as the pump does
	// The rest of the frame comes; the connection goes on.
	if _, err := nc.Write(make([]byte, half)); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(pod)
	if err != nil {
		t.Fatal(err)
	}
	if got := half + int64(len(rest)); r.n != got {
		t.Fatalf("consumer told of %d bytes written; the pod got %d", r.n, got)
	}
	if err := f.WriteFrame(&spdyframe.PingFrame{Id: 1}); err != nil {
		t.Fatal(err)
	}
	readUntil(t, f, nc, "the PING's echo", func(fr spdyframe.Frame) bool { _, ok := fr.(*spdyframe.PingFrame); return ok })
	select {
	case <-srv.Done():
		t.Fatalf("the connection ended: %v", srv.Err())
	default:
	}
}
