// Command sockmap measures the one way a forwarder can beat a user-space
// relay on loopback: in-kernel forwarding with a BPF sockmap, where an
// SK_SKB verdict program moves each received skb to the other socket's
// send path, so no process wakes up per chunk. It is an experiment behind
// portforwardd's raw transport, not part of the daemon: it shows what the
// kernel path would gain and why portforwardd does not use it.
//
// In one run, interleaved, median of -runs, 1 GiB each way through:
// a direct loopback connection, a splice relay (io.Copy between two
// *net.TCPConn, what portforwardd's connect-tcp upgrade does), and a
// sockmap relay. Each transfer is checked end to end (the sink counts what
// it got; the source's bytes are counted by the client), and a transfer
// that lost bytes or stalled is counted as failed, not timed. Then a client floods a server
// that never reads, for -flood, through each relay, and the bytes the
// relay accepted and the kernel memory that went with them are printed.
//
//	cd hack/sockmap && go run . -runs 3   # as root
//
// Its own module, so cilium/ebpf stays out of the daemon's module graph.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

func main() {
	size := flag.Int64("size", 1<<30, "bytes per transfer")
	runs := flag.Int("runs", 3, "interleaved runs (the median is printed)")
	flood := flag.Duration("flood", 3*time.Second, "how long the flood writes to a server that never reads")
	flag.Parse()
	if err := run(*size, *runs, *flood); err != nil {
		fmt.Fprintln(os.Stderr, "sockmap:", err)
		os.Exit(1)
	}
}

func run(size int64, runs int, flood time.Duration) error {
	hash, err := loadRedirect()
	if err != nil {
		return fmt.Errorf("load the BPF program: %w", err)
	}
	defer hash.Close()

	backend, err := listen(serveBench)
	if err != nil {
		return err
	}
	defer backend.Close()
	hold, err := listen(func(c *net.TCPConn) { select {} })
	if err != nil {
		return err
	}
	defer hold.Close()

	type path struct {
		name       string
		addr, hold string
		up, down   []float64
		lost       int
	}
	var paths []*path
	paths = append(paths, &path{name: "direct loopback", addr: backend.Addr().String(), hold: hold.Addr().String()})
	for _, m := range []struct {
		name  string
		relay func(a, b *net.TCPConn)
	}{
		{"splice relay (io.Copy, as connect-tcp)", spliceRelay},
		{"sockmap relay (in-kernel redirect), shutdown at EOF", func(a, b *net.TCPConn) { sockmapRelay(hash, a, b, false) }},
		{"sockmap relay, shutdown once drained", func(a, b *net.TCPConn) { sockmapRelay(hash, a, b, true) }},
	} {
		p := &path{name: m.name}
		for _, to := range []string{backend.Addr().String(), hold.Addr().String()} {
			ln, err := startRelay(to, m.relay)
			if err != nil {
				return err
			}
			defer ln.Close()
			if p.addr == "" {
				p.addr = ln.Addr().String()
			} else {
				p.hold = ln.Addr().String()
			}
		}
		paths = append(paths, p)
	}

	for range runs {
		for _, p := range paths {
			if r, err := upload(p.addr, size); err != nil {
				p.lost++
			} else {
				p.up = append(p.up, r)
			}
			if r, err := download(p.addr, size); err != nil {
				p.lost++
			} else {
				p.down = append(p.down, r)
			}
		}
	}
	fmt.Printf("%s each way, median of %d interleaved runs\n\n", strconv.FormatInt(size>>20, 10)+" MiB", runs)
	fmt.Println("| path | client→server | server→client | transfers that failed (lost bytes, or stalled for 20 s) | flood into a server that never reads: bytes accepted in " + flood.String() + " | kernel memory taken meanwhile |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, p := range paths {
		accepted, mem := floodFor(p.hold, flood)
		fmt.Printf("| %s | %s | %s | %d of %d | %d MiB | %d MiB |\n", p.name,
			rate(p.up, paths[0].up), rate(p.down, paths[0].down), p.lost, 2*runs, accepted>>20, mem>>20)
	}
	return nil
}

// rate formats a median rate and its ratio to the direct connection.
func rate(v, direct []float64) string {
	if len(v) == 0 {
		return "—"
	}
	m := median(v)
	if len(direct) == 0 {
		return fmt.Sprintf("%.0f MiB/s", m)
	}
	return fmt.Sprintf("%.0f MiB/s (%.2f of direct)", m, m/median(direct))
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// loadRedirect creates a SOCKHASH keyed by socket cookie and attaches an
// SK_SKB verdict program to it. The program looks up the receiving
// socket's cookie: the entry is the other socket of its pair, and the skb
// goes to that socket's send path (bpf_sk_redirect_hash, flags 0). A
// socket without an entry keeps its bytes (SK_PASS).
func loadRedirect() (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.SockHash, KeySize: 8, ValueSize: 4, MaxEntries: 1 << 16})
	if err != nil {
		return nil, err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       ebpf.SkSKB,
		AttachType: ebpf.AttachSkSKBVerdict,
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.FnGetSocketCookie.Call(),
			asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.LoadMapPtr(asm.R2, m.FD()),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnSkRedirectHash.Call(),
			asm.JNE.Imm(asm.R0, 0, "out"), // SK_DROP (0): no entry
			asm.Mov.Imm(asm.R0, 1),        // SK_PASS
			asm.Return().WithSymbol("out"),
		},
	})
	if err != nil {
		m.Close()
		return nil, err
	}
	defer prog.Close() // the map holds it
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: m.FD(), Program: prog, Attach: ebpf.AttachSkSKBVerdict}); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// sockmapRelay pairs a and b in the map, then waits for each side's EOF
// (a read on a socket whose bytes the kernel redirects returns only EOF)
// and half-closes the other side, as a relay must. The kernel sends the
// redirected bytes from a work queue and nothing tells user space when it
// is done, so a shutdown right after the EOF overtakes them (-drain=false
// shows it). With -drain the relay first polls until the other side has
// taken every byte this side received (TCP_INFO and SIOCOUTQ).
func sockmapRelay(hash *ebpf.Map, a, b *net.TCPConn, drain bool) {
	ka, fa, err := cookieFD(a)
	if err == nil {
		var kb uint64
		var fb uint32
		if kb, fb, err = cookieFD(b); err == nil {
			if err = hash.Update(ka, fb, ebpf.UpdateAny); err == nil {
				err = hash.Update(kb, fa, ebpf.UpdateAny)
			}
			defer hash.Delete(ka)
			defer hash.Delete(kb)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sockmap: pair:", err)
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	half := func(dst, src *net.TCPConn) {
		defer wg.Done()
		io.Copy(dst, src) // bytes queued before the pairing, then EOF
		for drain && written(dst) < received(src) {
			time.Sleep(50 * time.Microsecond)
		}
		dst.CloseWrite()
	}
	go half(a, b)
	go half(b, a)
	wg.Wait()
}

// received is how many bytes c has received; written is how many were
// put into c's send path (acknowledged plus still queued). -1 and 1<<62
// on errors, so a broken socket ends the wait.
func received(c *net.TCPConn) int64 {
	var n int64 = -1
	control(c, func(fd int) {
		if ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = int64(ti.Bytes_received)
		}
	})
	return n
}

func written(c *net.TCPConn) int64 {
	var n int64 = 1 << 62
	control(c, func(fd int) {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return
		}
		// Acked first, then the queue: an ack in between moves bytes
		// from the queue to acked, so the sum can only come out low.
		q, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if err == nil {
			n = int64(ti.Bytes_acked) + int64(q)
		}
	})
	return n
}

func control(c *net.TCPConn, f func(fd int)) {
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { f(int(fd)) })
	}
}

func cookieFD(c *net.TCPConn) (cookie uint64, fd uint32, err error) {
	err = errors.New("no socket")
	control(c, func(f int) {
		fd = uint32(f)
		cookie, err = unix.GetsockoptUint64(f, unix.SOL_SOCKET, unix.SO_COOKIE)
	})
	return cookie, fd, err
}

// spliceRelay copies both ways with io.Copy (splice between TCP sockets)
// and half-closes each side after the other's EOF.
func spliceRelay(a, b *net.TCPConn) {
	var wg sync.WaitGroup
	wg.Add(2)
	half := func(dst, src *net.TCPConn) {
		defer wg.Done()
		io.Copy(dst, src)
		dst.CloseWrite()
	}
	go half(a, b)
	go half(b, a)
	wg.Wait()
}

func startRelay(to string, relay func(a, b *net.TCPConn)) (net.Listener, error) {
	return listen(func(c *net.TCPConn) {
		d, err := net.Dial("tcp4", to)
		if err != nil {
			return
		}
		defer d.Close()
		relay(c, d.(*net.TCPConn))
	})
}

func listen(handle func(*net.TCPConn)) (net.Listener, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return ln, nil
}

var pattern = make([]byte, 1<<20)

// transferLimit ends a transfer that stalls: a failure, like a lost byte.
const transferLimit = 20 * time.Second

// serveBench: 'N' and a count: read that many bytes, answer how many
// came; 'R' and a count: write that many bytes and half-close.
func serveBench(c *net.TCPConn) {
	var cmd [9]byte
	if _, err := io.ReadFull(c, cmd[:]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint64(cmd[1:]))
	switch cmd[0] {
	case 'N':
		got, _ := io.CopyN(io.Discard, c, n)
		binary.Write(c, binary.BigEndian, got)
	case 'R':
		writeN(c, n)
		c.CloseWrite()
		io.Copy(io.Discard, c)
	}
}

func writeN(w io.Writer, n int64) (int64, error) {
	var sent int64
	for sent < n {
		k, err := w.Write(pattern[:min(n-sent, int64(len(pattern)))])
		sent += int64(k)
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

func command(addr string, cmd byte, n int64) (net.Conn, error) {
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(transferLimit))
	if _, err := c.Write(binary.BigEndian.AppendUint64([]byte{cmd}, uint64(n))); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// upload returns MiB/s, or an error when the server's count or its
// answer went missing.
func upload(addr string, size int64) (float64, error) {
	start := time.Now()
	c, err := command(addr, 'N', size)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if _, err := writeN(c, size); err != nil {
		return 0, err
	}
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return 0, fmt.Errorf("the count: %w", err)
	}
	if got != size {
		return 0, fmt.Errorf("server got %d of %d bytes", got, size)
	}
	return float64(size) / (1 << 20) / time.Since(start).Seconds(), nil
}

func download(addr string, size int64) (float64, error) {
	start := time.Now()
	c, err := command(addr, 'R', size)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	n, err := io.Copy(io.Discard, c)
	if err == nil && n != size {
		err = fmt.Errorf("got %d of %d bytes", n, size)
	}
	if err != nil {
		return 0, err
	}
	return float64(size) / (1 << 20) / time.Since(start).Seconds(), nil
}

// floodFor writes to a server that never reads, for d, and returns the
// bytes written and how far MemAvailable fell meanwhile (kernel memory
// holding them: socket buffers, or the sockmap's queues).
func floodFor(addr string, d time.Duration) (written, mem int64) {
	before := memAvailable()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		return 0, 0
	}
	c.SetWriteDeadline(time.Now().Add(d))
	written, _ = writeN(c, 1<<62)
	mem = before - memAvailable()
	c.Close()
	return written, max(mem, 0)
}

func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
