package e2e

import (
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSPDYDrainedStreamBuffersAreFreed: a stream whose pod fell behind
// holds up to --stream-buffer-bytes of client data, within --buffer-bytes
// for all of them; once its pod has read it all, the buffer is given back,
// although the stream stays open. Streams filled one after another (a
// pool of database connections over one kubectl port-forward, each doing
// one bulk upload to a slow pod) held every buffer they ever grew to for
// as long as they stayed open: here ten streams held 40 MiB of heap with
// nothing buffered, against an 8 MiB --buffer-bytes.
func TestSPDYDrainedStreamBuffersAreFreed(t *testing.T) {
	const (
		streamBuf = 4 << 20
		budget    = 8 << 20
		nstreams  = 10
		// Each stream gets more than its buffer and the kernel's socket
		// buffers (at most about 4 MiB while the pod reads nothing) take,
		// so its buffer fills.
		perStream = 12 << 20
		// slack: the session, its streams' goroutines and small buffers
		// (no copy buffer: SPDY streams write to the pod from their
		// buffer, and splice the other way), and the runtime's noise.
		slack = 8 << 20
	)
	// --pprof: the heap is read after a collection.
	d := startDaemon(t, "--stream-buffer-bytes", strconv.Itoa(streamBuf), "--session-buffer-bytes", strconv.Itoa(budget),
		"--buffer-bytes", strconv.Itoa(budget), "--pprof")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	conn := dialSPDY(t, d, p.route())
	d.collectGarbage(t)
	d.collectGarbage(t)
	heap0 := d.metric(t, "go_memstats_heap_inuse_bytes")

	zeros := make([]byte, 64<<10)
	for i := range nstreams {
		id := strconv.Itoa(i + 1)
		errs, err := conn.CreateStream(streamHeaders("error", strconv.Itoa(port(ln)), id))
		if err != nil {
			t.Fatalf("error stream %d: %v", i, err)
		}
		errs.Close()
		data, err := conn.CreateStream(streamHeaders("data", strconv.Itoa(port(ln)), id))
		if err != nil {
			t.Fatalf("data stream %d: %v", i, err)
		}
		accepted := acceptOne(t, ln)
		var pc net.Conn
		select {
		case pc = <-accepted:
		case <-time.After(10 * time.Second):
			t.Fatalf("stream %d: the pod accepted no connection", i)
		}
		sent := make(chan error, 1)
		go func() {
			for k := 0; k < perStream; k += len(zeros) {
				if _, err := data.Write(zeros); err != nil {
					sent <- err
					return
				}
			}
			sent <- nil
		}()
		// The pod reads nothing until its stream's buffer is nearly full
		// (well within the 10 s stall timeout).
		eventually(t, 8*time.Second, func() (bool, string) {
			held := d.metric(t, "portforwardd_buffered_bytes")
			return held >= streamBuf*3/4, fmt.Sprintf("stream %d: buffered_bytes %v, want the stream's buffer nearly full", i, held)
		})
		pc.SetReadDeadline(time.Now().Add(time.Minute))
		if n, err := io.CopyN(io.Discard, pc, perStream); err != nil {
			t.Fatalf("stream %d: the pod read %d of %d bytes: %v", i, n, perStream, err)
		}
		if err := <-sent; err != nil {
			t.Fatalf("stream %d: client write: %v", i, err)
		}
		eventually(t, 10*time.Second, func() (bool, string) {
			held := d.metric(t, "portforwardd_buffered_bytes")
			return held == 0, fmt.Sprintf("stream %d: buffered_bytes %v after its pod read everything", i, held)
		})
		// The stream and its pod connection stay open, idle.
	}

	// A drained buffer is given back once its stream has waited a second
	// for more (pipe.shrinkAfter).
	var grew float64
	eventually(t, 10*time.Second, func() (bool, string) {
		d.collectGarbage(t)
		d.collectGarbage(t)
		grew = d.metric(t, "go_memstats_heap_inuse_bytes") - heap0
		return grew <= budget+slack, fmt.Sprintf("heap in use grew by %.1f MiB with nothing buffered, want at most %d MiB (--buffer-bytes %d MiB and %d MiB of slack): drained stream buffers are kept",
			grew/(1<<20), (budget+slack)>>20, budget>>20, slack>>20)
	})
	t.Logf("%d idle streams that each once held %d MiB: heap in use +%.1f MiB", nstreams, streamBuf>>20, grew/(1<<20))
	if got := d.metricSum(t, "portforwardd_streams_active"); got != nstreams {
		t.Errorf("streams_active %v, want the %d streams still open", got, nstreams)
	}
}

// TestSPDYPodFloodIntoClientThatNeverReads: pods that send and send to a
// SPDY client that reads nothing cost the daemon the copy buffers the
// README gives, 32 KiB per stream and at most a fixed amount more for the
// busy ones, however many streams there are. On a plain TCP connection
// each such stream held a whole 128 KiB frame, read back from its splice
// pipe, while it waited for the writer: 300 streams held 44 MiB of heap.
func TestSPDYPodFloodIntoClientThatNeverReads(t *testing.T) {
	const (
		nstreams = 300
		perQuiet = 32 << 10
		// fullFrames is the most streams that hold a whole frame
		// (128 KiB) at once.
		fullFrames = 64 * 128 << 10
		// perStream is what a forward holds beside its copy buffer: its
		// streams, pair, pipe and session bookkeeping (measured: about
		// 20 KiB over the WebSocket tunnel).
		perStream = 24 << 10
		slack     = 8 << 20
	)
	d := startDaemon(t, "--pprof")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	chunk := make([]byte, 64<<10)
	serveEach(ln, func(c *net.TCPConn) {
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	d.collectGarbage(t)
	d.collectGarbage(t)
	heap0, fds0 := d.metric(t, "go_memstats_heap_inuse_bytes"), d.openFDs(t)
	s := dialRawSPDY(t, d, p.route(), "spdy")
	for i := range nstreams {
		req := strconv.Itoa(i)
		s.send(synStreamFrame(s.id(), 0, s.block(portHeaders("error", strconv.Itoa(port(ln)), req))),
			synStreamFrame(s.id(), 0, s.block(portHeaders("data", strconv.Itoa(port(ln)), req))))
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		active := d.metricSum(t, "portforwardd_streams_active")
		return active == nstreams, fmt.Sprintf("streams_active %v, want %d", active, nstreams)
	})
	// Every stream has taken a chunk from its pod into a splice pipe (two
	// fds beside its pod's socket) and waits for the writer: the pods'
	// bytes have gone as far as they can.
	var grew float64
	limit := float64(nstreams*(perQuiet+perStream) + fullFrames + slack)
	eventually(t, 30*time.Second, func() (bool, string) {
		fds := d.openFDs(t) - fds0
		d.collectGarbage(t)
		grew = d.metric(t, "go_memstats_heap_inuse_bytes") - heap0
		if grew > limit {
			t.Fatalf("heap in use grew by %.1f MiB with %d streams waiting for a client that reads nothing, want at most %.1f MiB",
				grew/(1<<20), nstreams, limit/(1<<20))
		}
		// (The one writing holds its pipe too; a few may be between two
		// chunks.)
		return fds >= 3*nstreams-10, fmt.Sprintf("%d more fds, want a pod socket and a pipe per stream", fds)
	})
	t.Logf("%d streams flooding a client that reads nothing: heap in use +%.1f MiB (limit %.1f MiB)", nstreams, grew/(1<<20), limit/(1<<20))
}

// TestWebSocketV4IdleSessionCost: an idle v4 session with one port costs
// the daemon a bounded amount of heap (its WebSocket's 64 KiB read buffer,
// the port's two 32 KiB copy buffers, and bookkeeping); once the clients
// are gone the daemon's goroutines and fds are back where they were and
// the pods' sockets are closed. Each session's reader held its 128 KiB
// message buffer while it waited for the next message: 276 KiB per idle
// session.
func TestWebSocketV4IdleSessionCost(t *testing.T) {
	const (
		n          = 100
		perSession = (64 + 2*32 + 32) << 10
	)
	d := startDaemon(t, "--pprof")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	d.collectGarbage(t)
	d.collectGarbage(t)
	heap0 := d.metric(t, "go_memstats_heap_inuse_bytes")
	base := d.usage(t)
	var clients []*v4Client
	for range n {
		c, _, err := dialV4(t, d, p.route(), []int{port(ln)}, "v4.channel.k8s.io")
		if err != nil {
			t.Fatal(err)
		}
		c.expectPrefixes(port(ln))
		clients = append(clients, c)
	}
	eventually(t, 20*time.Second, func() (bool, string) {
		active := d.metricSum(t, "portforwardd_streams_active")
		return active == n, fmt.Sprintf("streams_active %v, want %d", active, n)
	})
	d.collectGarbage(t)
	d.collectGarbage(t)
	each := (d.metric(t, "go_memstats_heap_inuse_bytes") - heap0) / n
	t.Logf("%d idle v4 sessions: %.0f KiB of heap each", n, each/1024)
	if each > perSession {
		t.Errorf("each idle v4 session holds %.0f KiB of heap, want at most %d KiB", each/1024, perSession>>10)
	}

	for _, c := range clients {
		c.ws.Close()
	}
	after := d.settle(t, base, 30*time.Second)
	t.Logf("after the clients left: %v (before: %v)", after, base)
	eventually(t, 10*time.Second, func() (bool, string) {
		out, err := exec.Command("ip", "netns", "exec", p.netnsName, "ss", "-Htn", "state", "established",
			fmt.Sprintf("( sport = :%d )", port(ln))).CombinedOutput()
		if err != nil {
			t.Fatalf("ss in the pod: %v: %s", err, out)
		}
		open := strings.Count(strings.TrimSpace(string(out)), "\n")
		if len(strings.TrimSpace(string(out))) > 0 {
			open++
		}
		return open == 0, fmt.Sprintf("%d pod sockets still established:\n%s", open, out)
	})
}
