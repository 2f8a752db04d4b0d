package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// runRelays is the relay study (-relays): bulk each way, interleaved, for
// a direct connection, portforwardd's raw transport, and the plain relay
// with each copy strategy in relayCopies (and socket buffer sizes), each
// relay its own process. It reports each path's rates as fractions of the
// direct connection's, the server's CPU per GiB, and how busy the whole
// machine was: what bounds a user-space forwarder on this machine.
func runRelays(size int64, runs int, daemonBin string, daemonFlags []string, copies []string, sockBufs []int) error {
	e, err := newBenchEnv(daemonBin, daemonFlags)
	if err != nil {
		return err
	}
	defer e.close()
	type study struct {
		path
		up, down, cpuPerGiB, busy []float64
	}
	all := []*study{
		{path: tcpPath("direct loopback", tcpDialer(e.host), nil)},
		{path: tcpPath("portforwardd raw (connect-tcp: Go's splice)", rawDialer(e.daemon.addr, e.route, e.remote), e.daemon)},
	}
	for _, c := range copies {
		for _, b := range sockBufs {
			p, err := e.relay(c, b)
			if err != nil {
				return err
			}
			name := "relay " + c
			if b > 0 {
				name += ", socket buffers " + formatSize(int64(b))
			}
			all = append(all, &study{path: tcpPath(name, tcpDialer(p.addr), p)})
		}
	}
	mib := float64(size) / (1 << 20)
	for range runs {
		for _, s := range all {
			for _, up := range []bool{true, false} {
				c0, b0 := s.cpu(), readCPUStat()
				f := s.download
				if up {
					f = s.upload
				}
				t, err := f(size)
				if err != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
				c1, b1 := s.cpu(), readCPUStat()
				if up {
					s.up = append(s.up, mib/t.Seconds())
				} else {
					s.down = append(s.down, mib/t.Seconds())
				}
				s.cpuPerGiB = append(s.cpuPerGiB, (c1-c0)/(mib/1024))
				s.busy = append(s.busy, b1.busySince(b0))
			}
		}
	}

	fmt.Printf("relay study: %s each way, median of %d interleaved runs, %d CPUs, %s\n\n",
		formatSize(size), runs, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"))
	fmt.Println("| path | client→pod | pod→client | server CPU per GiB | machine busy |")
	fmt.Println("|---|---:|---:|---:|---:|")
	direct := all[0]
	for _, s := range all {
		cpu := "—"
		if s.proc != nil {
			cpu = fmt.Sprintf("%.2f s", medianOf(s.cpuPerGiB))
		}
		fmt.Printf("| %s | %.0f MiB/s (%.2f) | %.0f MiB/s (%.2f) | %s | %.0f%% |\n", s.name,
			medianOf(s.up), medianOf(s.up)/medianOf(direct.up), medianOf(s.down), medianOf(s.down)/medianOf(direct.down),
			cpu, 100*medianOf(s.busy))
	}
	return nil
}

// cpuStat is the machine's total and idle time from /proc/stat, in ticks.
type cpuStat struct{ total, idle float64 }

func readCPUStat() cpuStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var s cpuStat
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		s.total += v
		if i == 3 || i == 4 { // idle, iowait
			s.idle += v
		}
	}
	return s
}

// busySince is the fraction of the machine's CPU time that was not idle
// between a and s.
func (s cpuStat) busySince(a cpuStat) float64 {
	if s.total <= a.total {
		return 0
	}
	return 1 - (s.idle-a.idle)/(s.total-a.total)
}

func medianOf(v []float64) float64 {
	ds := make([]time.Duration, len(v))
	for i, x := range v {
		ds[i] = time.Duration(x * 1e6)
	}
	return float64(median(ds)) / 1e6
}
