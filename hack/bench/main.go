// Command bench measures portforwardd against a direct loopback connection
// in the same run: bulk throughput each way through client-go's SPDY
// port-forward (the kubectl code path), setup latency, and the daemon's CPU
// per GiB. Results are medians of interleaved runs, reported as ratios.
//
//	sudo go run ./hack/bench -size 1GiB -runs 3
//
// It needs root and iproute2: it creates the network namespace
// bench_pod-<pid>, runs the test servers inside it, and starts the daemon
// (built from this checkout unless -daemon names a binary).
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portforwardd/portforwardd/nsenter/nsentertest"
)

func main() {
	size := flag.String("size", "1GiB", "bytes per bulk transfer (KiB, MiB, GiB suffixes)")
	runs := flag.Int("runs", 3, "interleaved runs per bulk measurement (the median is reported)")
	pings := flag.Int("pings", 300, "connections per setup-latency measurement")
	daemon := flag.String("daemon", "", "portforwardd binary (default: build ./cmd/portforwardd)")
	flag.Parse()
	n, err := parseSize(*size)
	if err == nil {
		err = run(n, *runs, *pings, *daemon)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if v, ok := strings.CutSuffix(s, suffix); ok {
			s, mult = v, m
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad -size %q", s)
	}
	return v * mult, nil
}

func run(size int64, runs, pings int, daemonBin string) error {
	tmp, err := os.MkdirTemp("", "portforwardd-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if daemonBin == "" {
		daemonBin = filepath.Join(tmp, "portforwardd")
		if out, err := exec.Command("go", "build", "-o", daemonBin, "./cmd/portforwardd").CombinedOutput(); err != nil {
			return fmt.Errorf("build daemon: %v\n%s", err, out)
		}
	}

	pod := fmt.Sprintf("pod-%d", os.Getpid())
	netnsName := "bench_" + pod
	if out, err := exec.Command("ip", "netns", "add", netnsName).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", netnsName).Run()
	if out, err := exec.Command("ip", "-n", netnsName, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set lo up: %v: %s", err, out)
	}
	podLn, err := nsentertest.Listen("/run/netns/"+netnsName, "tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer podLn.Close()
	go serveBench(podLn)
	hostLn, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer hostLn.Close()
	go serveBench(hostLn)

	d, err := startDaemon(daemonBin)
	if err != nil {
		return err
	}
	defer d.stop()
	route := "/portForward/bench/" + pod
	remote := podLn.Addr().(*net.TCPAddr).Port
	spdyLocal, stopSPDY, err := forward(d.addr, route, remote, false)
	if err != nil {
		return err
	}
	defer stopSPDY()
	tunnelLocal, stopTunnel, err := forward(d.addr, route, remote, true)
	if err != nil {
		return err
	}
	defer stopTunnel()
	paths := []path{
		tcpPath("direct loopback", hostLn.Addr().String()),
		tcpPath("SPDY (kubectl < 1.31)", fmt.Sprintf("127.0.0.1:%d", spdyLocal)),
		tcpPath("WebSocket tunnel (kubectl ≥ 1.31)", fmt.Sprintf("127.0.0.1:%d", tunnelLocal)),
		v4Path("WebSocket v4 binary", d.addr, route, remote),
	}

	fmt.Printf("portforwardd: %s per transfer, median of %d interleaved runs, %d CPUs\n\n",
		formatSize(size), runs, runtime.NumCPU())
	fmt.Println("Each cell: the rate, then its ratio to direct loopback and to SPDY.")
	fmt.Println()
	header := "| workload |"
	for _, p := range paths {
		header += " " + p.name + " |"
	}
	fmt.Println(header)
	fmt.Println("|---|" + strings.Repeat("---:|", len(paths)))

	cpu := make([]float64, len(paths))
	moved := make([]int64, len(paths))
	for _, w := range []struct {
		name string
		fn   func(p path) (time.Duration, error)
	}{
		{"one stream client→pod", func(p path) (time.Duration, error) { return p.upload(size) }},
		{"one stream pod→client", func(p path) (time.Duration, error) { return p.download(size) }},
	} {
		times := make([][]time.Duration, len(paths))
		for range runs {
			for i, p := range paths {
				c0 := d.cpuSeconds()
				t, err := w.fn(p)
				if err != nil {
					return fmt.Errorf("%s, %s: %w", w.name, p.name, err)
				}
				cpu[i] += d.cpuSeconds() - c0
				moved[i] += size
				times[i] = append(times[i], t)
			}
		}
		row := "| " + w.name + " |"
		base, spdyRate := mibps(size, median(times[0])), mibps(size, median(times[1]))
		for i := range paths {
			r := mibps(size, median(times[i]))
			if i == 0 {
				row += fmt.Sprintf(" %.0f MiB/s |", r)
			} else {
				row += fmt.Sprintf(" %.0f MiB/s (%.3f, %.2f) |", r, r/base, r/spdyRate)
			}
		}
		fmt.Println(row)
	}

	lat := make([][]time.Duration, len(paths))
	for range pings {
		for i, p := range paths {
			t, err := p.setup()
			if err != nil {
				return fmt.Errorf("setup, %s: %w", p.name, err)
			}
			lat[i] = append(lat[i], t)
		}
	}
	row := "| setup + 1-byte echo + close, p50 |"
	base, spdyLat := median(lat[0]), median(lat[1])
	for i := range paths {
		m := median(lat[i])
		if i == 0 {
			row += fmt.Sprintf(" %d µs |", m.Microseconds())
		} else {
			row += fmt.Sprintf(" %d µs (%.1f×, %.2f×) |", m.Microseconds(), float64(m)/float64(base), float64(m)/float64(spdyLat))
		}
	}
	fmt.Println(row)
	row = "| daemon CPU per GiB moved |"
	for i := range paths {
		if i == 0 {
			row += " — |"
		} else {
			row += fmt.Sprintf(" %.2f s |", cpu[i]/(float64(moved[i])/(1<<30)))
		}
	}
	fmt.Println(row)
	fmt.Printf("\ndaemon RSS at the end: %d MiB\n", d.rssMiB())
	return nil
}

// The bench server speaks a one-byte command: 'S' sink (read to EOF, then
// answer the byte count), 'N' sink of an announced 8-byte count, 'R'
// source (read an 8-byte count, write that many bytes, close), 'E' echo
// one byte.
func serveBench(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go handleBench(c.(*net.TCPConn))
	}
}

var pattern = func() []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}()

func handleBench(c *net.TCPConn) {
	defer c.Close()
	cmd := make([]byte, 1)
	if _, err := io.ReadFull(c, cmd); err != nil {
		return
	}
	switch cmd[0] {
	case 'S':
		n, _ := io.Copy(io.Discard, c)
		binary.Write(c, binary.BigEndian, n)
	case 'N': // like 'S' for a client that cannot half-close: the size comes first
		var want int64
		if binary.Read(c, binary.BigEndian, &want) != nil {
			return
		}
		n, _ := io.CopyN(io.Discard, c, want)
		binary.Write(c, binary.BigEndian, n)
		io.Copy(io.Discard, c)
	case 'R':
		var n int64
		if binary.Read(c, binary.BigEndian, &n) != nil {
			return
		}
		writeN(c, n)
		c.CloseWrite()
		io.Copy(io.Discard, c)
	case 'E':
		c.Write(cmd)
		io.Copy(io.Discard, c)
	}
}

func writeN(w io.Writer, n int64) error {
	for n > 0 {
		chunk := pattern
		if int64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		n -= int64(len(chunk))
	}
	return nil
}

type daemonProc struct {
	cmd  *exec.Cmd
	addr string
}

func startDaemon(bin string) (*daemonProc, error) {
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--metrics-listen", "", "--log-format", "json", "--log-level", "info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "serving port-forward" {
			go io.Copy(io.Discard, stderr)
			return &daemonProc{cmd: cmd, addr: rec.Addr}, nil
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	return nil, errors.New("portforwardd exited before serving")
}

func (d *daemonProc) stop() {
	d.cmd.Process.Kill()
	d.cmd.Wait()
}

// cpuSeconds is the daemon's user+system CPU time from /proc/<pid>/stat.
func (d *daemonProc) cpuSeconds() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func (d *daemonProc) rssMiB() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb >> 10
		}
	}
	return 0
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func mibps(size int64, d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }

func formatSize(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d B", n)
}
