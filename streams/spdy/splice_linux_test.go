package spdy

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"testing"

	"github.com/moby/spdystream"
	spdyframe "github.com/moby/spdystream/spdy"
	"golang.org/x/sys/unix"
)

// podPair returns both ends of a loopback TCP connection: the daemon's
// side of a pod connection, and the pod's.
func podPair(t *testing.T) (daemon, pod *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	d, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p := <-accepted
	if p == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { d.Close(); p.Close() })
	return d.(*net.TCPConn), p.(*net.TCPConn)
}

// spliceAll moves src to s with SpliceChunkFrom until src's EOF, then
// half-closes s, as the pump does.
func spliceAll(s *Stream, src *net.TCPConn) (int64, error) {
	var total int64
	for {
		n, rerr, werr := s.SpliceChunkFrom(src)
		total += int64(n)
		if werr != nil {
			return total, werr
		}
		if errors.Is(rerr, io.EOF) {
			return total, s.CloseWrite()
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// sendRandom writes n random bytes to c, half-closes it, and returns
// their sha256.
func sendRandom(c *net.TCPConn, n int64) [32]byte {
	h := sha256.New()
	io.Copy(io.MultiWriter(c, h), io.LimitReader(rand.Reader, n))
	c.CloseWrite()
	return [32]byte(h.Sum(nil))
}

// expectSpliced reads the client's stream to its end: size bytes with the
// pod's sha256; then the splicing side must have ended without error.
func expectSpliced(t *testing.T, client io.Reader, size int64, sum <-chan [32]byte, spliced <-chan error) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, client)
	if err != nil || n != size || [32]byte(h.Sum(nil)) != <-sum {
		t.Fatalf("client got %d bytes (err %v), want %d with the pod's sha256", n, err, size)
	}
	if err := <-spliced; err != nil {
		t.Fatalf("splice: %v", err)
	}
}

// TestSpliceChunkFromIntegrity: four streams at once carry 16 MiB each
// from their pod sockets to a moby/spdystream client, spliced (direct, or
// queued behind each other's frames), and every byte arrives in order.
func TestSpliceChunkFromIntegrity(t *testing.T) {
	client, _, accepted := pair(t, Options{})
	const streams, size = 4, 16 << 20
	var wg sync.WaitGroup
	for i := range streams {
		cs, ss := open(t, client, accepted, "s"+string(rune('0'+i)))
		if !ss.CanSplice() {
			t.Fatal("a stream on a TCP connection cannot splice")
		}
		daemon, pod := podPair(t)
		sum := make(chan [32]byte, 1)
		go func() { sum <- sendRandom(pod, size) }()
		spliced := make(chan error, 1)
		go func() {
			n, err := spliceAll(ss, daemon)
			if err == nil && n != size {
				err = errors.New("spliced a wrong count")
			}
			spliced <- err
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := sha256.New()
			n, err := io.Copy(h, cs)
			if err != nil || n != size || [32]byte(h.Sum(nil)) != <-sum {
				t.Errorf("stream %d: client got %d bytes (err %v), want %d with the pod's sha256", i, n, err, size)
			}
			if err := <-spliced; err != nil {
				t.Errorf("stream %d: splice: %v", i, err)
			}
		}()
	}
	wg.Wait()
}

// TestSpliceChunkQueuedBehindStuckStream: while one stream's frames wait
// for a client that does not read them, another stream's spliced chunk is
// queued behind them (read back out of its pipe) instead of going direct,
// and arrives whole once the client reads again.
func TestSpliceChunkQueuedBehindStuckStream(t *testing.T) {
	client, _, accepted := pair(t, Options{})
	stuckC, stuckS := open(t, client, accepted, "stuck")
	otherC, otherS := open(t, client, accepted, "other")

	queued := make(chan struct{}, 1)
	testHookSpliceQueued = func() {
		select {
		case queued <- struct{}{}:
		default:
		}
	}
	t.Cleanup(func() { testHookSpliceQueued = nil })

	// 64 MiB the client does not read yet: the stuck stream stays queued.
	big := make([]byte, 64<<20)
	stuckDone := make(chan error, 1)
	go func() { _, err := stuckS.Write(big); stuckDone <- err }()
	if _, err := io.ReadFull(stuckC, make([]byte, 1)); err != nil {
		t.Fatalf("first byte of the stuck stream: %v", err)
	}

	daemon, pod := podPair(t)
	const size = 4 << 20
	sum := make(chan [32]byte, 1)
	go func() { sum <- sendRandom(pod, size) }()
	spliced := make(chan error, 1)
	go func() { _, err := spliceAll(otherS, daemon); spliced <- err }()
	<-queued // the chunk found the writer busy with the stuck stream

	// The client reads again: both streams complete.
	go io.Copy(io.Discard, stuckC)
	expectSpliced(t, otherC, size, sum, spliced)
	if err := <-stuckDone; err != nil {
		t.Fatalf("stuck stream's write: %v", err)
	}
}

// TestSpliceChunkFromPodReset: a pod that resets ends the splice with an
// error, moves nothing more, and leaves the connection sound: another
// stream then carries data both ways.
func TestSpliceChunkFromPodReset(t *testing.T) {
	client, _, accepted := pair(t, Options{})
	_, ss := open(t, client, accepted, "reset")
	daemon, pod := podPair(t)
	pod.SetLinger(0)
	pod.Close() // RST
	n, rerr, werr := ss.SpliceChunkFrom(daemon)
	if n != 0 || werr != nil || rerr == nil || errors.Is(rerr, io.EOF) {
		t.Fatalf("after the pod's reset: n %d, rerr %v, werr %v; want 0, a reset error, nil", n, rerr, werr)
	}
	ss.Reset()

	cs2, ss2 := open(t, client, accepted, "after")
	daemon2, pod2 := podPair(t)
	go func() {
		pod2.Write([]byte("still fine"))
		pod2.CloseWrite()
	}()
	spliced := make(chan error, 1)
	go func() { _, err := spliceAll(ss2, daemon2); spliced <- err }()
	got, err := io.ReadAll(cs2)
	if err != nil || string(got) != "still fine" {
		t.Fatalf("second stream: got %q (err %v), want %q", got, err, "still fine")
	}
	if err := <-spliced; err != nil {
		t.Fatalf("second stream's splice: %v", err)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// dropIdlePipes closes the pipes kept between chunks.
func dropIdlePipes() {
	idlePipes.Lock()
	list := idlePipes.list
	idlePipes.list = nil
	idlePipes.Unlock()
	for _, p := range list {
		p.destroy()
	}
}

// TestSplicePipesAtRestBounded: 64 streams splice a chunk each at once,
// each through its own pipe; once they are done, at most maxIdlePipes
// pipes stay open, with no help from the garbage collector, and after
// pipeIdleTime (twice, at most) none.
func TestSplicePipesAtRestBounded(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	dropIdlePipes()
	client, _, accepted := pair(t, Options{})
	const streams = 64
	type side struct {
		cs          *spdystream.Stream
		ss          *Stream
		daemon, pod *net.TCPConn
	}
	var all []side
	for i := range streams {
		cs, ss := open(t, client, accepted, fmt.Sprint("s", i))
		daemon, pod := podPair(t)
		all = append(all, side{cs, ss, daemon, pod})
	}
	before := openFDs(t)
	// Every pod sends 1 MiB at once, so each stream's chunk has its own
	// pipe while the client reads them all. Each pod writes on a
	// goroutine of its own: 1 MiB need not fit in the socket buffers (it
	// did not on a loaded machine, under TCP memory pressure), and a
	// write that waits for the splice below must not hold up its start.
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(3)
		go func() {
			defer wg.Done()
			if _, err := s.pod.Write(make([]byte, 1<<20)); err != nil {
				t.Errorf("pod write: %v", err)
			}
			s.pod.CloseWrite()
		}()
		go func() {
			defer wg.Done()
			if _, err := spliceAll(s.ss, s.daemon); err != nil {
				t.Errorf("splice: %v", err)
			}
		}()
		go func() {
			defer wg.Done()
			if n, err := io.Copy(io.Discard, s.cs); err != nil || n != 1<<20 {
				t.Errorf("client got %d bytes (err %v), want 1 MiB", n, err)
			}
		}()
	}
	wg.Wait()
	if after := openFDs(t); after > before+2*maxIdlePipes {
		t.Fatalf("%d file descriptors open after the chunks, %d before: more than %d idle pipes kept", after, before, maxIdlePipes)
	}
	waitFor(t, "the idle pipes to be closed", func() bool { return openFDs(t) <= before })
}

// TestSpliceWithoutPipes: when the process cannot open a pipe (its file
// descriptor limit is reached), a stream's bytes still all reach the
// client, through user space.
func TestSpliceWithoutPipes(t *testing.T) {
	dropIdlePipes()
	client, _, accepted := pair(t, Options{})
	cs, ss := open(t, client, accepted, "nopipes")
	daemon, pod := podPair(t)

	// The lowest free descriptor becomes the limit: every new one fails.
	free, err := unix.Dup(0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(free)
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(free)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	if p, err := getSplicePipe(); err == nil {
		p.destroy()
		t.Fatal("a pipe could still be opened: the test's premise failed")
	}

	const size = 8 << 20
	sum := make(chan [32]byte, 1)
	go func() { sum <- sendRandom(pod, size) }()
	spliced := make(chan error, 1)
	go func() {
		n, err := spliceAll(ss, daemon)
		if err == nil && n != size {
			err = fmt.Errorf("moved %d bytes, want %d", n, size)
		}
		if err != nil {
			ss.Reset() // as the pump does: the client's read ends
		}
		spliced <- err
	}()
	expectSpliced(t, cs, size, sum, spliced)
}

// TestDataFramesAtMostMaxFrame: whichever way a stream's bytes leave (a
// Write queued for the writer, a chunk spliced direct from a socket),
// the DATA frames carry at most Options.MaxFrame bytes each, in order.
// Kills a chunk spliced direct sent as one frame.
func TestDataFramesAtMostMaxFrame(t *testing.T) {
	const maxFrame = 16 << 10
	const size = 256 << 10
	streams := make(chan *Stream, 2)
	f, nc, _ := tcpFramer(t, Options{MaxFrame: maxFrame}, func(s *Stream) error { streams <- s; return nil })
	if err := f.WriteFrame(syn(1, false)); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFrame(syn(3, false)); err != nil {
		t.Fatal(err)
	}
	s1, s3 := <-streams, <-streams
	if !s3.CanSplice() {
		t.Fatal("a stream on a TCP connection cannot splice")
	}
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i * 7 / 5)
	}
	// Both SYN_REPLYs are read first: the writer is idle, and the
	// spliced chunks go direct.
	replies := 0
	readUntil(t, f, nc, "the SYN_REPLYs of streams 1 and 3", func(fr spdyframe.Frame) bool {
		if _, ok := fr.(*spdyframe.SynReplyFrame); ok {
			replies++
		}
		return replies == 2
	})
	got := map[spdyframe.StreamId][]byte{}
	// readStream reads frames until id's FIN.
	readStream := func(id spdyframe.StreamId) {
		t.Helper()
		readUntil(t, f, nc, fmt.Sprintf("stream %d's data and FIN", id), func(fr spdyframe.Frame) bool {
			d, ok := fr.(*spdyframe.DataFrame)
			if !ok {
				return false
			}
			if len(d.Data) > maxFrame {
				t.Fatalf("DATA on stream %d of %d bytes, MaxFrame is %d", d.StreamId, len(d.Data), maxFrame)
			}
			got[d.StreamId] = append(got[d.StreamId], d.Data...)
			return d.StreamId == id && d.Flags&spdyframe.DataFlagFin != 0
		})
	}
	daemon, pod := podPair(t)
	go func() {
		pod.Write(want)
		pod.CloseWrite()
	}()
	errs := make(chan error, 1)
	go func() {
		_, err := spliceAll(s3, daemon)
		errs <- err
	}()
	readStream(3)
	if err := <-errs; err != nil {
		t.Fatalf("splice: %v", err)
	}
	go func() {
		_, err := s1.Write(want)
		if err == nil {
			err = s1.CloseWrite()
		}
		errs <- err
	}()
	readStream(1)
	if err := <-errs; err != nil {
		t.Fatalf("write: %v", err)
	}
	for _, id := range []spdyframe.StreamId{1, 3} {
		if string(got[id]) != string(want) {
			t.Fatalf("stream %d: %d bytes, not the %d sent", id, len(got[id]), size)
		}
	}
}
