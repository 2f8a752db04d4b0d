package e2e

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLimitsRefuseTheClientOnly: past --max-sessions a client gets a 503
// saying why, an oversized header block a 431, a request that never
// finishes its headers a closed connection after --read-header-timeout;
// each is counted, and the sessions already running are unaffected.
func TestLimitsRefuseTheClientOnly(t *testing.T) {
	d := startDaemon(t, "--max-sessions", "2", "--max-header-bytes", "4Ki", "--read-header-timeout", "1s")
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	if got := d.metric(t, `portforwardd_limit{limit="sessions"}`); got != 2 {
		t.Fatalf(`portforwardd_limit{limit="sessions"} = %v, want 2`, got)
	}
	f1 := startForward(t, d, transports[0], p.route(), port(ln))
	f2 := startForward(t, d, transports[0], p.route(), port(ln))

	resp, body := rawRequest(t, d.addr, "GET "+p.route()+" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || strings.TrimSpace(body) != "too many port-forward sessions on this node (limit 2); try again later" {
		t.Fatalf("third session: %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if got := d.metric(t, `portforwardd_limit_hits_total{limit="sessions"}`); got != 1 {
		t.Errorf("limit_hits_total{sessions} = %v, want 1", got)
	}
	// The two sessions still forward.
	echoOnce(t, f1.dial(t), "first still works")
	echoOnce(t, f2.dial(t), "second still works")
	// A slot frees when a session ends.
	f1.close()
	eventually(t, 10*time.Second, func() (bool, string) {
		got := d.metric(t, `portforwardd_sessions_active{protocol="spdy"}`)
		return got == 1, "first session still counted"
	})
	f3 := startForward(t, d, transports[0], p.route(), port(ln))
	echoOnce(t, f3.dial(t), "third after a slot freed")

	// A header block over 4 KiB.
	resp, _ = rawRequest(t, d.addr, "GET "+p.route()+" HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 8<<10)+"\r\n\r\n")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("8 KiB header: %d, want 431", resp.StatusCode)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		return d.metric(t, `portforwardd_limit_hits_total{limit="header_bytes"}`) == 1, "431 not counted"
	})

	// Headers that never end: the connection is closed after about 1s.
	c, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	io.WriteString(c, "GET "+p.route()+" HTTP/1.1\r\nHost: x\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("slow request: read %d bytes, %v after %v; want the daemon to close it after --read-header-timeout 1s", n, err, time.Since(start))
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		return d.metric(t, `portforwardd_limit_hits_total{limit="read_header_timeout"}`) == 1, "read header timeout not counted"
	})
	echoOnce(t, f2.dial(t), "second unaffected by all of it")
}

// blackhole makes connects to port inside p hang: SYNs to it are dropped,
// as by a pod whose accept queue is full or whose firewall drops them.
func (p *pod) blackhole(t *testing.T, port int) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", p.netnsName, "iptables", "-A", "INPUT", "-p", "tcp",
		"--dport", strconv.Itoa(port), "--syn", "-j", "DROP").CombinedOutput(); err != nil {
		t.Fatalf("iptables in %s: %v: %s", p.netnsName, err, out)
	}
}

// TestSPDYResetPairCancelsItsDial: a client that opens a stream pair and
// resets both streams at once, over and over, holds no dial: the reset
// ends the pair's dial too. Otherwise each pair would leave a goroutine,
// a namespace fd and a socket behind for the whole --dial-timeout, outside
// every bound (--max-streams-per-session counts open streams only).
func TestSPDYResetPairCancelsItsDial(t *testing.T) {
	d := startDaemon(t, "--max-streams-per-session", "20", "--dial-timeout", "120s")
	p := newPod(t)
	const hung = 9
	p.blackhole(t, hung)
	s := dialRawSPDY(t, d, p.route(), "spdy")
	s.alive()
	base := d.usage(t)

	const pairs = 300
	rst := func(id uint32) []byte {
		return ctrlFrame(spdyRstStream, 0, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, id), rstCancel))
	}
	for i := range pairs {
		req := "reset-" + strconv.Itoa(i)
		errID, dataID := s.id(), s.id()
		s.send(synStreamFrame(errID, 0, s.block(portHeaders("error", strconv.Itoa(hung), req))),
			synStreamFrame(dataID, 0, s.block(portHeaders("data", strconv.Itoa(hung), req))),
			rst(errID), rst(dataID))
	}
	s.alive() // every frame above has been read
	eventually(t, 10*time.Second, func() (bool, string) {
		now := d.usage(t)
		active := d.metricSum(t, "portforwardd_streams_active")
		return active == 0 && now.fds <= base.fds+8,
			fmt.Sprintf("%d pairs opened and reset: streams_active %v, daemon holds %v (before: %v)", pairs, active, now, base)
	})
	s.alive()
}

// TestRefusalDoesNotWaitForABody: a request that declares a body it never
// sends is answered and its connection closed at once, like any refusal;
// an OPTIONS request with such a body is answered too. net/http would
// otherwise wait, with no deadline, for the body's bytes (up to 256 KiB)
// after the answer, or before a keep-alive one: one short request per
// connection held a goroutine and an fd for as long as the client liked,
// whatever --read-header-timeout says.
func TestRefusalDoesNotWaitForABody(t *testing.T) {
	d := startDaemon(t, "--read-header-timeout", "1s")
	p := newPod(t)
	base := d.usage(t)
	spdyUp := "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n"
	for _, c := range []struct {
		name, req string
		status    int
	}{
		{"no route", "GET /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", http.StatusNotFound},
		{"not an upgrade", "POST " + p.route() + " HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", http.StatusBadRequest},
		{"not an upgrade, chunked", "POST " + p.route() + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", http.StatusBadRequest},
		{"method", "PUT " + p.route() + " HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", http.StatusMethodNotAllowed},
		{"unknown pod", "POST /portForward/ns/nothere HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n" + spdyUp + "\r\n", http.StatusNotFound},
		{"OPTIONS", "OPTIONS " + p.route() + " HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", http.StatusNoContent},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp4", d.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			io.WriteString(conn, c.req)
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != c.status {
				t.Errorf("status %d, want %d", resp.StatusCode, c.status)
			}
			if _, err := br.ReadByte(); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("connection still open 5 s after the %d: the daemon waits for the body", resp.StatusCode)
			}
		})
	}
	d.settle(t, base, 10*time.Second)
}

// TestHeaderLimitsCountedOnKeepAliveConnection: a 431 or a read header
// timeout is counted in limit_hits_total also on a connection whose first
// request was answered and kept alive (an OPTIONS, which the CLI sends
// first). The counts looked only at connections no request had reached
// the handler on, so a client that sent one OPTIONS first was refused at
// either limit as often as it liked, and never counted.
func TestHeaderLimitsCountedOnKeepAliveConnection(t *testing.T) {
	d := startDaemon(t, "--max-header-bytes", "4Ki", "--read-header-timeout", "1s")
	p := newPod(t)
	// keptAlive opens a connection and has an OPTIONS answered on it.
	keptAlive := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp4", d.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "OPTIONS "+p.route()+" HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("OPTIONS: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusNoContent || resp.Close {
			t.Fatalf("OPTIONS: %d, close %v; want 204 and a connection kept alive", resp.StatusCode, resp.Close)
		}
		return c, br
	}

	c, br := keptAlive()
	// 16 KiB: net/http lets a request on a kept-alive connection have
	// up to 8 KiB over the limit (what it read ahead, and its slack).
	io.WriteString(c, "GET "+p.route()+" HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 16<<10)+"\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("second request, 16 KiB of headers: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("second request, 16 KiB of headers: %d, want 431", resp.StatusCode)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		n := d.metric(t, `portforwardd_limit_hits_total{limit="header_bytes"}`)
		return n == 1, fmt.Sprintf("limit_hits_total{header_bytes} = %v after a 431 on a kept-alive connection, want 1", n)
	})

	c, br = keptAlive()
	start := time.Now()
	io.WriteString(c, "GET "+p.route()+" HTTP/1.1\r\nHost: x\r\n")
	if n, err := io.Copy(io.Discard, br); err != nil || time.Since(start) > 10*time.Second {
		t.Fatalf("second request, headers never finished: read %d bytes, %v after %v; want the connection closed after --read-header-timeout 1s", n, err, time.Since(start))
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		n := d.metric(t, `portforwardd_limit_hits_total{limit="read_header_timeout"}`)
		return n == 1, fmt.Sprintf("limit_hits_total{read_header_timeout} = %v after a header timeout on a kept-alive connection, want 1", n)
	})
}
