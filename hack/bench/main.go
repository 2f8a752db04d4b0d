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
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

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
	local, stopForward, err := forwardSPDY(d.addr, "/portForward/bench/"+pod, podLn.Addr().(*net.TCPAddr).Port)
	if err != nil {
		return err
	}
	defer stopForward()
	direct := hostLn.Addr().String()
	via := fmt.Sprintf("127.0.0.1:%d", local)

	fmt.Printf("portforwardd vs direct loopback: %s per transfer, median of %d interleaved runs, %d CPUs\n\n",
		formatSize(size), runs, runtime.NumCPU())
	fmt.Println("| workload | direct loopback | portforwardd (client-go SPDY) | ratio |")
	fmt.Println("|---|---:|---:|---:|")
	cpu0 := d.cpuSeconds()
	var moved int64
	for _, w := range []struct {
		name string
		fn   func(addr string, size int64) (time.Duration, error)
	}{{"one stream client→pod", upload}, {"one stream pod→client", download}} {
		var dDirect, dVia []time.Duration
		for range runs {
			t1, err := w.fn(direct, size)
			if err != nil {
				return fmt.Errorf("%s direct: %w", w.name, err)
			}
			t2, err := w.fn(via, size)
			if err != nil {
				return fmt.Errorf("%s via portforwardd: %w", w.name, err)
			}
			dDirect, dVia = append(dDirect, t1), append(dVia, t2)
			moved += size
		}
		rd, rv := mibps(size, median(dDirect)), mibps(size, median(dVia))
		fmt.Printf("| %s | %.0f MiB/s | %.0f MiB/s | %.3f |\n", w.name, rd, rv, rv/rd)
	}
	cpuPerGiB := (d.cpuSeconds() - cpu0) / (float64(moved) / (1 << 30))

	var lDirect, lVia []time.Duration
	for range pings {
		t1, err := setupEcho(direct)
		if err != nil {
			return fmt.Errorf("setup direct: %w", err)
		}
		t2, err := setupEcho(via)
		if err != nil {
			return fmt.Errorf("setup via portforwardd: %w", err)
		}
		lDirect, lVia = append(lDirect, t1), append(lVia, t2)
	}
	fmt.Printf("| setup + 1-byte echo + close, p50 | %d µs | %d µs | %.1f× slower |\n",
		median(lDirect).Microseconds(), median(lVia).Microseconds(), float64(median(lVia))/float64(median(lDirect)))
	fmt.Printf("| daemon CPU per GiB forwarded | — | %.2f s | |\n", cpuPerGiB)
	fmt.Printf("| daemon RSS at the end | — | %d MiB | |\n", d.rssMiB())
	return nil
}

// The bench server speaks a one-byte command: 'S' sink (read to EOF, then
// answer the byte count), 'R' source (read an 8-byte count, write that
// many bytes, close), 'E' echo one byte.
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

func upload(addr string, size int64) (time.Duration, error) {
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte{'S'})
	if err := writeN(c, size); err != nil {
		return 0, err
	}
	c.(*net.TCPConn).CloseWrite()
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return 0, err
	}
	if got != size {
		return 0, fmt.Errorf("server got %d bytes, want %d", got, size)
	}
	return time.Since(start), nil
}

func download(addr string, size int64) (time.Duration, error) {
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte{'R'})
	binary.Write(c, binary.BigEndian, size)
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		return 0, err
	}
	if n != size {
		return 0, fmt.Errorf("got %d bytes, want %d", n, size)
	}
	return time.Since(start), nil
}

func setupEcho(addr string) (time.Duration, error) {
	start := time.Now()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if _, err := c.Write([]byte{'E'}); err != nil {
		return 0, err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return 0, err
	}
	return time.Since(start), nil
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

// forwardSPDY starts client-go's port-forward, as kubectl does, and returns
// its local port.
func forwardSPDY(daemonAddr, route string, remote int) (int, func(), error) {
	transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: "http://" + daemonAddr})
	if err != nil {
		return 0, nil, err
	}
	u := &url.URL{Scheme: "http", Host: daemonAddr, Path: route}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", remote)}, stop, ready, io.Discard, os.Stderr)
	if err != nil {
		return 0, nil, err
	}
	errc := make(chan error, 1)
	go func() { errc <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		return 0, nil, fmt.Errorf("port-forward: %w", err)
	}
	ports, err := pf.GetPorts()
	if err != nil {
		close(stop)
		return 0, nil, err
	}
	return int(ports[0].Local), func() { close(stop) }, nil
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
