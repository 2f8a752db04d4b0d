// Command bench measures portforwardd against the reference stack and a
// direct loopback connection in one run: bulk throughput each way, 8 and
// 64 concurrent streams, setup latency (p50, p99), head-of-line blocking,
// and the servers' CPU per GiB and RSS. Clients are client-go's
// port-forward as kubectl builds it (SPDY, and the WebSocket tunnel), a
// v4 WebSocket client, and connect-tcp and HTTP/2 clients of
// portforwardd's own transports; the portforward CLI, run as its own
// process with its spdy, raw and h2 transports, reached through the local
// port it listens on, as a user's clients reach it; a plain relay and
// client-go's floor (a SPDY server answering from memory) are measured
// too, and -paths picks which of them run. Bulk and latency figures are
// medians of interleaved runs. It prints a Markdown table and writes a PNG
// chart.
//
//	go run ./hack/bench -size 1GiB -runs 3 -chart bench.png
//
// With -relays it runs the relay study instead: bulk each way through a
// direct connection, portforwardd's raw transport, and a plain relay
// process with each copy strategy (read/write buffers, splice loops) and
// socket buffer size, with the server's CPU and the machine's busy time.
//
// The reference stack is the kubelet's port-forward handler library
// (k8s.io/cri-streaming, as CRI-O and containerd vendor it, on
// moby/spdystream) with containerd's forwarding loop, built into this
// binary and run as a separate process. The bench needs root and
// iproute2: it creates the network namespace bench_pod-<pid>.
package main

import (
	"bufio"
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

	"k8s.io/klog/v2"

	"github.com/portforwardd/portforwardd/nsenter/nsentertest"
)

func main() {
	size := flag.String("size", "1GiB", "bytes per bulk transfer (KiB, MiB, GiB suffixes)")
	runs := flag.Int("runs", 3, "interleaved runs per measurement (the median is reported)")
	pings := flag.Int("pings", 300, "connections per setup-latency measurement")
	daemon := flag.String("daemon", "", "portforwardd binary (default: build ./cmd/portforwardd)")
	cli := flag.String("cli", "", "portforward CLI binary, for the cli-* paths (default: build ./cmd/portforward)")
	daemonFlags := flag.String("daemon-flags", "", "more flags for portforwardd, space-separated (e.g. \"--metrics-listen 127.0.0.1:10351 --pprof\" to profile it while the bench runs)")
	chart := flag.String("chart", "", "write a PNG chart to this file (needs the bulk and parallel sections)")
	cpuEach := flag.Bool("cpu-each", false, "also give the servers' CPU per GiB of each throughput workload, a row each (the suite's row sums them all)")
	only := flag.String("only", "bulk,parallel,setup,hol", "comma list of sections to run: bulk, parallel, setup, hol")
	pathList := flag.String("paths", strings.Join(pathNames, ","), "comma list of paths to measure besides the direct connection and the reference stack, which every ratio needs: "+strings.Join(pathNames, ", "))
	refListen := flag.String("serve-reference", "", "internal: run the reference server on this address")
	nullListen := flag.String("serve-null", "", "internal: run the null SPDY server on this address")
	relayListen := flag.String("serve-relay", "", "internal: run the plain relay on this address")
	relayNetns := flag.String("relay-netns", "", "internal: the plain relay's pod netns file")
	relayPort := flag.Int("relay-port", 0, "internal: the plain relay's pod port")
	relayCopy := flag.String("relay-copy", "rw-128KiB", "internal: the plain relay's copy strategy")
	relaySockBuf := flag.Int("relay-sockbuf", 0, "internal: the plain relay's SO_RCVBUF and SO_SNDBUF (0: autotuning)")
	relays := flag.Bool("relays", false, "run the relay study instead of the suite: bulk each way through a direct connection, portforwardd raw, and the plain relay with each copy strategy and -relay-sockbufs")
	relayCopies := flag.String("relay-copies", "rw-128KiB,rw-1MiB,splice,splice-fill,splice-256KiB,splice-2pipes,splice-blocking", "the relay study's copy strategies: "+relayCopyNames()+" (NAME@1: with GOMAXPROCS=1)")
	relaySockBufs := flag.String("relay-sockbufs", "0", "the relay study's socket buffer sizes, comma list (0: autotuning)")
	netnsDir := flag.String("netns-dir", "/run/netns", "internal: the reference server's netns directory")
	flag.Parse()
	// client-go reports expected errors (the stalled stream's reset) through klog.
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
	if *refListen != "" {
		if err := serveReference(*refListen, *netnsDir); err != nil {
			fmt.Fprintln(os.Stderr, "reference:", err)
			os.Exit(1)
		}
		return
	}
	if *nullListen != "" {
		if err := serveNull(*nullListen); err != nil {
			fmt.Fprintln(os.Stderr, "null:", err)
			os.Exit(1)
		}
		return
	}
	if *relayListen != "" {
		if err := serveRelay(*relayListen, *relayNetns, *relayPort, *relayCopy, *relaySockBuf); err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			os.Exit(1)
		}
		return
	}
	n, err := parseSize(*size)
	if err == nil && *relays {
		var bufs []int
		for _, f := range strings.Split(*relaySockBufs, ",") {
			b, perr := parseSize(f)
			if f == "0" {
				b, perr = 0, nil
			}
			if perr != nil {
				err = fmt.Errorf("bad -relay-sockbufs: %w", perr)
			}
			bufs = append(bufs, int(b))
		}
		if err == nil {
			err = runRelays(n, *runs, *daemon, strings.Fields(*daemonFlags), strings.Split(*relayCopies, ","), bufs)
		}
	} else if err == nil {
		var columns map[string]bool
		if columns, err = pathKeys(*pathList); err == nil {
			err = run(n, *runs, *pings, *daemon, strings.Fields(*daemonFlags), *cli, *chart, sections(*only), columns, *cpuEach)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// rssSettle is how long after the suite the servers' RSS is read.
const rssSettle = 6 * time.Second

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

// result is one cell: a rate in MiB/s or a duration, or nothing.
type result struct {
	ok   bool
	rate float64
	dur  time.Duration
	note string
}

// sections parses -only.
// pathNames are the -paths keys, in the table's column order.
var pathNames = []string{"spdy", "tunnel", "v4", "raw", "h2", "cli-spdy", "cli-raw", "cli-h2", "relay", "floor", "floor-tunnel"}

// pathKeys parses -paths.
func pathKeys(s string) (map[string]bool, error) {
	m := sections(s)
	for k := range m {
		if !slices.Contains(pathNames, k) && k != "direct" && k != "reference" {
			return nil, fmt.Errorf("bad -paths: unknown path %q (known: %s)", k, strings.Join(pathNames, ", "))
		}
	}
	return m, nil
}

func sections(s string) map[string]bool {
	m := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		m[strings.TrimSpace(f)] = true
	}
	return m
}

// benchEnv is what every measurement needs: the pod's network namespace
// with the bench server in it, the same server on the host (the direct
// path), and a running portforwardd.
type benchEnv struct {
	netns  string // the pod's netns file
	pod    string // the pod's name, in the namespace "bench"
	route  string // the pod's port-forward route
	remote int    // the bench server's port in the pod
	host   string // the bench server's address on the host
	daemon *proc
	self   string // this program, for its helper modes
	tmp    string // a directory for built binaries, removed by close
	cli    string // the portforward CLI built into tmp, once built
	stops  []func()
}

func newBenchEnv(daemonBin string, daemonFlags []string) (_ *benchEnv, err error) {
	e := &benchEnv{}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	tmp, err := os.MkdirTemp("", "portforwardd-bench-")
	if err != nil {
		return nil, err
	}
	e.stops = append(e.stops, func() { os.RemoveAll(tmp) })
	e.tmp = tmp
	if daemonBin == "" {
		daemonBin = filepath.Join(tmp, "portforwardd")
		if out, err := exec.Command("go", "build", "-o", daemonBin, "./cmd/portforwardd").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build daemon: %v\n%s", err, out)
		}
	}

	pod := fmt.Sprintf("pod-%d", os.Getpid())
	netnsName := "bench_" + pod
	if out, err := exec.Command("ip", "netns", "add", netnsName).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	e.stops = append(e.stops, func() { exec.Command("ip", "netns", "del", netnsName).Run() })
	e.netns = "/run/netns/" + netnsName
	if out, err := exec.Command("ip", "-n", netnsName, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip link set lo up: %v: %s", err, out)
	}
	podLn, err := nsentertest.Listen(e.netns, "tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.stops = append(e.stops, func() { podLn.Close() })
	go serveBench(podLn)
	hostLn, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.stops = append(e.stops, func() { hostLn.Close() })
	go serveBench(hostLn)
	e.host = hostLn.Addr().String()
	e.remote = podLn.Addr().(*net.TCPAddr).Port
	e.pod = pod
	e.route = "/portForward/bench/" + pod

	if e.daemon, err = startDaemon(daemonBin, daemonFlags); err != nil {
		return nil, err
	}
	e.stops = append(e.stops, e.daemon.stop)
	if e.self, err = os.Executable(); err != nil {
		return nil, err
	}
	return e, nil
}

// close stops and removes everything, last started first.
func (e *benchEnv) close() {
	for i := len(e.stops) - 1; i >= 0; i-- {
		e.stops[i]()
	}
}

// relay starts the plain relay helper with a copy strategy (-relay-copy)
// and socket buffer size (0: the kernel's autotuning).
func (e *benchEnv) relay(copyName string, sockBuf int) (*proc, error) {
	p, err := startHelper(e.self, "-serve-relay", "127.0.0.1:0", "-relay-netns", e.netns, "-relay-port", strconv.Itoa(e.remote),
		"-relay-copy", copyName, "-relay-sockbuf", strconv.Itoa(sockBuf))
	if err != nil {
		return nil, err
	}
	e.stops = append(e.stops, p.stop)
	return p, nil
}

func run(size int64, runs, pings int, daemonBin string, daemonFlags []string, cliBin, chartFile string, only, columns map[string]bool, cpuEach bool) error {
	e, err := newBenchEnv(daemonBin, daemonFlags)
	if err != nil {
		return err
	}
	defer e.close()
	d, self, route, remote := e.daemon, e.self, e.route, e.remote
	ref, err := startHelper(self, "-serve-reference", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ref.stop()
	relayProc, err := e.relay("rw-128KiB", 0)
	if err != nil {
		return err
	}
	nullProc, err := startHelper(self, "-serve-null", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer nullProc.stop()
	if columns["cli-spdy"] || columns["cli-raw"] || columns["cli-h2"] {
		if cliBin, err = e.cliBinary(cliBin); err != nil {
			return err
		}
	}

	newPaths := func() ([]path, func(), error) {
		var stops []func()
		stopAll := func() {
			for _, s := range stops {
				s()
			}
		}
		mk := func(addr string, tunnel bool) (string, error) {
			local, stop, err := forward(addr, route, remote, tunnel)
			if err != nil {
				return "", err
			}
			stops = append(stops, stop)
			return fmt.Sprintf("127.0.0.1:%d", local), nil
		}
		refAddr, err := mk(ref.addr, false)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		spdyAddr, err := mk(d.addr, false)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		tunAddr, err := mk(d.addr, true)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		nullAddr, err := mk(nullProc.addr, false)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		nullTunAddr, err := mk(nullProc.addr, true)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		// The CLI's paths: a CLI process each, started only when measured.
		cliPath := func(key, name, transport string) (path, error) {
			if !columns[key] {
				return path{}, nil
			}
			c, err := startCLI(cliBin, "http://"+d.addr, transport, "bench", e.pod, remote)
			if err != nil {
				return path{}, err
			}
			stops = append(stops, c.stop)
			p := tcpPath(name, tcpDialer(c.addr), d)
			p.client = c
			return p, nil
		}
		cliSPDY, err := cliPath("cli-spdy", "portforward CLI, SPDY (client-go)", "spdy")
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		cliRaw, err := cliPath("cli-raw", "portforward CLI, raw (connect-tcp)", "raw")
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		cliH2, err := cliPath("cli-h2", "portforward CLI, HTTP/2 streams", "h2")
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		all := []struct {
			key string
			p   path
		}{
			{"direct", tcpPath("direct loopback", tcpDialer(e.host), nil)},
			{"reference", tcpPath("reference stack (SPDY)", tcpDialer(refAddr), ref)},
			{"spdy", tcpPath("portforwardd SPDY", tcpDialer(spdyAddr), d)},
			{"tunnel", tcpPath("portforwardd WS tunnel", tcpDialer(tunAddr), d)},
			{"v4", v4Path("portforwardd WS v4", d.addr, route, remote, d)},
			{"raw", tcpPath("portforwardd raw (connect-tcp)", rawDialer(d.addr, route, remote), d)},
			{"h2", h2Path("portforwardd HTTP/2 streams", d.addr, route, remote, d)},
			{"cli-spdy", cliSPDY},
			{"cli-raw", cliRaw},
			{"cli-h2", cliH2},
			{"relay", tcpPath("plain relay (read/write, no framing)", tcpDialer(relayProc.addr), relayProc)},
			{"floor", tcpPath("client-go floor (SPDY server answering from memory)", tcpDialer(nullAddr), nullProc)},
			{"floor-tunnel", tcpPath("client-go floor, WS tunnel", tcpDialer(nullTunAddr), nullProc)},
		}
		var ps []path
		for _, a := range all {
			// The direct connection and the reference stack are the
			// baselines every ratio needs: always measured.
			if a.key == "direct" || a.key == "reference" || columns[a.key] {
				a.p.key = a.key
				ps = append(ps, a.p)
			}
		}
		return ps, stopAll, nil
	}
	paths, stopPaths, err := newPaths()
	if err != nil {
		return err
	}
	defer func() { stopPaths() }()

	type row struct {
		name  string
		cells []result
	}
	var rows []row
	cpu := make([]float64, len(paths))
	clientCPU := make([]float64, len(paths)) // the CLI's, on its paths
	moved := make([]int64, len(paths))
	var cpuRows []row // -cpu-each's
	measure := func(name string, fn func(p path) (time.Duration, int64, error)) error {
		times := make([][]time.Duration, len(paths))
		var bytes []int64 = make([]int64, len(paths))
		wcpu, wmoved := make([]float64, len(paths)), make([]int64, len(paths)) // this workload's
		for range runs {
			for i, p := range paths {
				c0, cc0 := p.cpu(), p.clientCPU()
				t, n, err := fn(p)
				if errors.Is(err, errNotApplicable) {
					continue
				}
				if err != nil {
					return fmt.Errorf("%s, %s: %w", name, p.name, p.explain(err))
				}
				cpu[i] += p.cpu() - c0
				wcpu[i] += p.cpu() - c0
				clientCPU[i] += p.clientCPU() - cc0
				moved[i] += n
				wmoved[i] += n
				bytes[i] = n
				times[i] = append(times[i], t)
			}
		}
		r := row{name: name}
		for i := range paths {
			if len(times[i]) == 0 {
				r.cells = append(r.cells, result{})
				continue
			}
			r.cells = append(r.cells, result{ok: true, rate: mibps(bytes[i], median(times[i]))})
		}
		rows = append(rows, r)
		if cpuEach {
			c := row{name: "server CPU per GiB, " + name}
			for i, p := range paths {
				if p.proc == nil || wmoved[i] == 0 {
					c.cells = append(c.cells, result{})
					continue
				}
				c.cells = append(c.cells, result{ok: true, note: fmt.Sprintf("%.2f s", wcpu[i]/(float64(wmoved[i])/(1<<30)))})
			}
			cpuRows = append(cpuRows, c)
		}
		return nil
	}
	if only["bulk"] {
		if err := measure("bulk client→pod", func(p path) (time.Duration, int64, error) { t, err := p.upload(size); return t, size, err }); err != nil {
			return err
		}
		if err := measure("bulk pod→client", func(p path) (time.Duration, int64, error) { t, err := p.download(size); return t, size, err }); err != nil {
			return err
		}
	}
	for _, n := range []int{8, 64} {
		if !only["parallel"] {
			break
		}
		if err := measure(fmt.Sprintf("%d streams pod→client, aggregate", n), func(p path) (time.Duration, int64, error) {
			t, err := p.parallel(n, size)
			return t, size, err
		}); err != nil {
			return err
		}
	}

	lat := make([][]time.Duration, len(paths))
	for range pings {
		if !only["setup"] {
			break
		}
		for i, p := range paths {
			t, err := p.setup()
			if err != nil {
				return fmt.Errorf("setup, %s: %w", p.name, p.explain(err))
			}
			lat[i] = append(lat[i], t)
		}
	}
	p50, p99 := row{name: "setup + 1-byte echo + close, p50"}, row{name: "setup + 1-byte echo + close, p99"}
	for i := range paths {
		if len(lat[i]) == 0 {
			break
		}
		p50.cells = append(p50.cells, result{ok: true, dur: percentile(lat[i], 50)})
		p99.cells = append(p99.cells, result{ok: true, dur: percentile(lat[i], 99)})
	}
	if only["setup"] {
		rows = append(rows, p50, p99)
	}

	// Head-of-line last: it can wedge the reference stack's session, so
	// every path gets fresh port-forwards.
	stopPaths()
	if paths, stopPaths, err = newPaths(); err != nil {
		return err
	}
	hol := row{name: fmt.Sprintf("one stream uploads while another holds %d MiB its pod never reads", holdBytes>>20)}
	for _, p := range paths {
		if !only["hol"] {
			break
		}
		r, err := p.headOfLine(size / 4)
		if errors.Is(err, errNotApplicable) {
			hol.cells = append(hol.cells, result{})
			continue
		}
		if err != nil {
			return fmt.Errorf("head-of-line, %s: %w", p.name, p.explain(err))
		}
		hol.cells = append(hol.cells, r)
	}
	if only["hol"] {
		rows = append(rows, hol)
	}

	// RSS is read at rest: the port-forwards are closed (the head-of-line
	// ones still hold their stuck streams), and every server gets the same
	// six seconds to end its sessions and give memory back (portforwardd
	// releases within five while other sessions stay open).
	stopPaths()
	stopPaths = func() {}
	time.Sleep(rssSettle)
	cpuRow, rssRow := row{name: "server CPU per GiB moved"}, row{name: "server RSS after the suite (at rest)"}
	// On the kubectl paths client-go runs in the bench, unmeasured; the
	// CLI's paths have a client process of their own.
	clientRow, clients := row{name: "portforward CLI CPU per GiB moved"}, false
	for i, p := range paths {
		if p.client == nil || moved[i] == 0 {
			clientRow.cells = append(clientRow.cells, result{})
			continue
		}
		clients = true
		clientRow.cells = append(clientRow.cells, result{ok: true, note: fmt.Sprintf("%.2f s", clientCPU[i]/(float64(moved[i])/(1<<30)))})
	}
	for i, p := range paths {
		if p.proc == nil || moved[i] == 0 {
			cpuRow.cells = append(cpuRow.cells, result{})
			rssRow.cells = append(rssRow.cells, result{})
			continue
		}
		cpuRow.cells = append(cpuRow.cells, result{ok: true, note: fmt.Sprintf("%.2f s", cpu[i]/(float64(moved[i])/(1<<30)))})
		rssRow.cells = append(rssRow.cells, result{ok: true, note: fmt.Sprintf("%d MiB", p.proc.rssMiB())})
	}
	rows = append(rows, cpuRows...)
	rows = append(rows, cpuRow)
	if clients {
		rows = append(rows, clientRow)
	}
	rows = append(rows, rssRow)

	// The table: each cell's value, then its ratio to the reference stack
	// (column 1) where both exist.
	fmt.Printf("portforwardd benchmark: %s per bulk transfer, median of %d interleaved runs, %d CPUs, %s\n\n",
		formatSize(size), runs, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"))
	fmt.Println("Each portforwardd cell also gives its ratio to the reference stack (×, higher is better for rates, lower for times).")
	fmt.Println()
	header := "| workload |"
	for _, p := range paths {
		header += " " + p.name + " |"
	}
	fmt.Println(header)
	fmt.Println("|---|" + strings.Repeat("---:|", len(paths)))
	for _, r := range rows {
		line := "| " + r.name + " |"
		for i, c := range r.cells {
			line += " " + formatCell(c, r.cells[1], i >= 2) + " |"
		}
		fmt.Println(line)
	}
	if chartFile != "" && only["bulk"] && only["parallel"] {
		var series []chartRow
		for _, r := range rows[:4] {
			cr := chartRow{label: r.name}
			for i, c := range r.cells {
				cr.values = append(cr.values, c.rate)
				if i == 0 {
					continue
				}
			}
			series = append(series, cr)
		}
		names, keys := make([]string, len(paths)), make([]string, len(paths))
		for i, p := range paths {
			names[i], keys[i] = p.name, p.key
		}
		if err := writeChart(chartFile, names, keys, series); err != nil {
			return err
		}
		fmt.Printf("\nchart: %s\n", chartFile)
	}
	return nil
}

func formatCell(c, ref result, ratio bool) string {
	switch {
	case !c.ok:
		return "—"
	case c.note != "":
		return c.note
	case c.dur > 0:
		s := fmt.Sprintf("%d µs", c.dur.Microseconds())
		if ratio && ref.ok && ref.dur > 0 {
			s += fmt.Sprintf(" (%.2f×)", float64(c.dur)/float64(ref.dur))
		}
		return s
	default:
		s := fmt.Sprintf("%.0f MiB/s", c.rate)
		if ratio && ref.ok && ref.rate > 0 {
			s += fmt.Sprintf(" (%.2f×)", c.rate/ref.rate)
		}
		return s
	}
}

// proc is a server process whose CPU and memory the bench reads, or a
// client process (the CLI) whose CPU it reads.
type proc struct {
	cmd  *exec.Cmd
	addr string
	log  *tailBuffer // the tail of its standard error, if kept
}

func startDaemon(bin string, more []string) (*proc, error) {
	args := append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "", "--log-format", "json", "--log-level", "info"}, more...)
	cmd := exec.Command(bin, args...)
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
			return &proc{cmd: cmd, addr: rec.Addr}, nil
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	return nil, errors.New("portforwardd exited before serving")
}

// startHelper runs this program in one of its internal server modes and
// reads the address it serves on.
func startHelper(self string, args ...string) (*proc, error) {
	cmd := exec.Command(self, args...)
	cmd.Stderr = io.Discard
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("%s: %w", args[0], err)
	}
	return &proc{cmd: cmd, addr: strings.TrimSpace(line)}, nil
}

func (p *proc) stop() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// cpuSeconds is the process's user+system CPU time from /proc/<pid>/stat.
func (p *proc) cpuSeconds() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func (p *proc) rssMiB() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
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

func median(ds []time.Duration) time.Duration { return percentile(ds, 50) }

func percentile(ds []time.Duration, pct int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*pct + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func mibps(size int64, d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }

func formatSize(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
