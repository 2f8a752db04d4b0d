package streams

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// tcpStream is a Stream over a real TCP connection: FIN is CloseWrite and a
// reset is an RST (SO_LINGER 0). It lets the pump be tested on real sockets
// on both sides.
type tcpStream struct{ c *net.TCPConn }

func (s tcpStream) Read(p []byte) (int, error) {
	n, err := s.c.Read(p)
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed) {
		err = ErrReset
	}
	return n, err
}
func (s tcpStream) Write(p []byte) (int, error) {
	n, err := s.c.Write(p)
	if err != nil {
		err = ErrReset
	}
	return n, err
}
func (s tcpStream) CloseWrite() error    { return s.c.CloseWrite() }
func (s tcpStream) Reset() error         { s.c.SetLinger(0); return s.c.Close() }
func (s tcpStream) Headers() http.Header { return nil }
func (s tcpStream) ID() uint32           { return 1 }

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	d, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	acc := <-ch
	if acc == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { d.Close(); acc.Close() })
	return d.(*net.TCPConn), acc.(*net.TCPConn)
}

// pumpRig is client ⇄ [server stream | Pump | pod conn] ⇄ pod.
type pumpRig struct {
	client, pod *net.TCPConn // the test's ends
	done        chan PumpResult
}

func newPumpRig(t testing.TB, ctx context.Context) *pumpRig {
	return newForwardRig(t, func(serverSide, podSide *net.TCPConn) PumpResult {
		return Pump(ctx, tcpStream{serverSide}, podSide, NopObserver{}, 0)
	})
}

// newForwardRig is a pumpRig whose forward is run by forward, given the
// server's ends of the client's and the pod's connections.
func newForwardRig(t testing.TB, forward func(serverSide, podSide *net.TCPConn) PumpResult) *pumpRig {
	client, serverSide := tcpPair(t)
	podSide, pod := tcpPair(t)
	r := &pumpRig{client: client, pod: pod, done: make(chan PumpResult, 1)}
	go func() { r.done <- forward(serverSide, podSide) }()
	return r
}

func (r *pumpRig) result(t testing.TB) PumpResult {
	t.Helper()
	select {
	case res := <-r.done:
		return res
	case <-time.After(10 * time.Second):
		t.Fatal("Pump did not return")
		return PumpResult{}
	}
}

func readAllTimeout(t testing.TB, c net.Conn) ([]byte, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return io.ReadAll(c)
}

func TestPumpClientEOFHalfClosesPod(t *testing.T) {
	r := newPumpRig(t, context.Background())
	r.client.Write([]byte("abc"))
	r.client.CloseWrite()

	got, err := readAllTimeout(t, r.pod)
	if err != nil || string(got) != "abc" {
		t.Fatalf("pod read %q, %v; want %q then EOF", got, err, "abc")
	}
	// The pod can still answer after the client's EOF.
	r.pod.Write([]byte("xyz"))
	r.pod.CloseWrite()
	got, err = readAllTimeout(t, r.client)
	if err != nil || string(got) != "xyz" {
		t.Fatalf("client read %q, %v; want %q then EOF", got, err, "xyz")
	}
	res := r.result(t)
	if res.Result != ResultOK || res.Up != 3 || res.Down != 3 {
		t.Fatalf("Pump: got %+v, want ok with 3 bytes each way", res)
	}
}

func TestPumpPodEOFHalfClosesClient(t *testing.T) {
	r := newPumpRig(t, context.Background())
	r.pod.Write(bytes.Repeat([]byte("x"), 100))
	r.pod.CloseWrite()

	got, err := readAllTimeout(t, r.client)
	if err != nil || len(got) != 100 {
		t.Fatalf("client read %d bytes, %v; want 100 then EOF", len(got), err)
	}
	// The client can still send after the pod's EOF.
	r.client.Write([]byte("late"))
	r.client.CloseWrite()
	got, err = readAllTimeout(t, r.pod)
	if err != nil || string(got) != "late" {
		t.Fatalf("pod read %q, %v; want %q then EOF", got, err, "late")
	}
	if res := r.result(t); res.Result != ResultOK || res.Up != 4 || res.Down != 100 {
		t.Fatalf("Pump: got %+v, want ok, up 4, down 100", res)
	}
}

func TestPumpPodResetResetsClient(t *testing.T) {
	r := newPumpRig(t, context.Background())
	r.pod.Write([]byte("partial"))
	r.pod.SetLinger(0)
	r.pod.Close() // RST

	got, err := readAllTimeout(t, r.client)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read %q, %v; want connection reset", got, err)
	}
	if res := r.result(t); res.Result != ResultReset {
		t.Fatalf("Pump: got %+v, want reset", res)
	}
}

func TestPumpClientResetClosesPod(t *testing.T) {
	r := newPumpRig(t, context.Background())
	// The pod keeps writing; the client resets while data is in flight.
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := r.pod.Write(chunk); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 1)
	if _, err := io.ReadFull(r.client, buf); err != nil {
		t.Fatal(err)
	}
	r.client.SetLinger(0)
	r.client.Close()

	if res := r.result(t); res.Result != ResultReset {
		t.Fatalf("Pump: got %+v, want reset", res)
	}
	// The pod's side is closed: its reads end.
	if _, err := readAllTimeout(t, r.pod); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("pod read after client reset: %v, want EOF or reset", err)
	}
}

func TestPumpContextAborts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := newPumpRig(t, ctx)
	cancel()
	if res := r.result(t); res.Result != ResultAborted {
		t.Fatalf("Pump after cancel: got %+v, want aborted", res)
	}
	if _, err := readAllTimeout(t, r.pod); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("pod read after abort: %v, want EOF or reset", err)
	}
}

// TestPumpBothWaysIntegrity moves 32 MiB each way at once and checks sha256.
func TestPumpBothWaysIntegrity(t *testing.T) {
	const size = 32 << 20
	r := newPumpRig(t, context.Background())
	type sum struct {
		h   [32]byte
		n   int64
		err error
	}
	recv := func(c *net.TCPConn, ch chan<- sum) {
		h := sha256.New()
		n, err := io.Copy(h, c)
		var s sum
		copy(s.h[:], h.Sum(nil))
		s.n, s.err = n, err
		ch <- s
	}
	upData := make([]byte, size)
	downData := make([]byte, size)
	rand.Read(upData)
	rand.Read(downData)
	upGot, downGot := make(chan sum, 1), make(chan sum, 1)
	go recv(r.pod, upGot)
	go recv(r.client, downGot)
	go func() { r.client.Write(upData); r.client.CloseWrite() }()
	go func() { r.pod.Write(downData); r.pod.CloseWrite() }()

	for name, c := range map[string]struct {
		ch   chan sum
		want []byte
	}{"client→pod": {upGot, upData}, "pod→client": {downGot, downData}} {
		s := <-c.ch
		if s.err != nil || s.n != size || s.h != sha256.Sum256(c.want) {
			t.Errorf("%s: %d bytes, err %v, sha256 match %v", name, s.n, s.err, s.h == sha256.Sum256(c.want))
		}
	}
	if res := r.result(t); res.Result != ResultOK || res.Up != size || res.Down != size {
		t.Fatalf("Pump: got %+v", res)
	}
}

// TestPumpDoesNotAllocatePerChunk checks that moving 64 times more data
// costs no more allocations: buffers come from the pool.
func TestPumpDoesNotAllocatePerChunk(t *testing.T) {
	mallocs := func(size int) uint64 {
		r := newPumpRig(t, context.Background())
		data := make([]byte, size)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		go func() { r.client.Write(data); r.client.CloseWrite() }()
		io.Copy(io.Discard, r.pod)
		r.pod.CloseWrite()
		io.Copy(io.Discard, r.client)
		r.result(t)
		runtime.ReadMemStats(&after)
		return after.Mallocs - before.Mallocs
	}
	mallocs(1 << 20) // warm the pool
	small, large := mallocs(1<<20), mallocs(64<<20)
	// 64 MiB is at least 512 chunks of 128 KiB; per-chunk allocation would
	// add hundreds.
	if large > small+64 {
		t.Fatalf("allocations: %d for 1 MiB, %d for 64 MiB; want no growth with size", small, large)
	}
}

func BenchmarkPump(b *testing.B) {
	const size = 64 << 20
	data := make([]byte, 1<<20)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		r := newPumpRig(b, context.Background())
		go func() {
			for i := 0; i < size/len(data); i++ {
				r.client.Write(data)
			}
			r.client.CloseWrite()
		}()
		io.Copy(io.Discard, r.pod)
		r.pod.CloseWrite()
		io.Copy(io.Discard, r.client)
		r.result(b)
	}
}

// podResettingStream is a tcpStream whose forward resets the pod when it
// aborts, as raw over TLS.
type podResettingStream struct{ tcpStream }

func (podResettingStream) PodResetting() {}

// TestPumpPodResettingAbortResetsPod: a PodResetting client's reset
// reaches the pod as a reset, not as a FIN it would take for the client's
// orderly end.
func TestPumpPodResettingAbortResetsPod(t *testing.T) {
	r := newForwardRig(t, func(serverSide, podSide *net.TCPConn) PumpResult {
		return Pump(context.Background(), podResettingStream{tcpStream{serverSide}}, podSide, NopObserver{}, 0)
	})
	r.client.Write([]byte("abc"))
	got := make([]byte, 3)
	r.pod.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(r.pod, got); err != nil {
		t.Fatalf("pod read %q, %v", got, err)
	}
	r.client.SetLinger(0)
	r.client.Close()
	if res := r.result(t); res.Result != ResultReset {
		t.Fatalf("pump: got %+v, want reset", res)
	}
	if rest, err := readAllTimeout(t, r.pod); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("pod after the client's reset: read %q, %v; want a reset", rest, err)
	}
}

// TestPumpClosesThePodWhenBothWaysEnd: a forward whose two directions
// both ended with EOF has its pod connection closed when Pump returns, as
// Pump owns it. Kills the orderly end leaving it open, which would leak a
// socket (and its namespace's fd) per forwarded connection.
func TestPumpClosesThePodWhenBothWaysEnd(t *testing.T) {
	podSides := make(chan *net.TCPConn, 1)
	r := newForwardRig(t, func(serverSide, podSide *net.TCPConn) PumpResult {
		podSides <- podSide
		return Pump(context.Background(), tcpStream{serverSide}, podSide, NopObserver{}, 0)
	})
	podSide := <-podSides
	r.client.CloseWrite()
	r.pod.CloseWrite()
	if got, err := readAllTimeout(t, r.client); err != nil || len(got) != 0 {
		t.Fatalf("client read %q, %v; want EOF", got, err)
	}
	if res := r.result(t); res.Result != ResultOK {
		t.Fatalf("Pump: got %+v, want ok", res)
	}
	if _, err := podSide.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write to the pod connection after Pump returned: %v, want %v", err, net.ErrClosed)
	}
}
