package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/portforwardd/portforwardd/streams"
)

// Bounds of the bad-input suite, in MiB of the daemon's RSS.
const (
	// rssPeakLimit bounds the daemon's resident memory during any case.
	rssPeakLimit = 256
	// rssAfterLimit bounds it once a case is over and its connections gone.
	rssAfterLimit = 128
	// shortBody bounds a refusal's body: one line of text, not an echo
	// of the request.
	shortBody = 1024
)

// rssScale is 5 for a daemon built with the race detector, whose shadow
// memory multiplies the RSS (measured: 21 → 53 MiB idle, 323 → 1402 MiB
// for 500 sessions, 4.3 times); the bounds scale with it. With 4, the
// race-built daemon was above its bound after the 500-session case in one
// run of three under a loaded machine (545 MiB against 512), though 4.3
// times the plain bound's 128 MiB is 550.
func rssScale() int {
	if os.Getenv("PORTFORWARDD_E2E_RACE") == "1" {
		return 5
	}
	return 1
}

// TestBadInput runs the bad-input suite against one daemon: malformed and
// truncated frames of every protocol, upgrades that never complete,
// absurd paths and queries, and 10,000 unpaired streams. Each case must be
// answered with a clear error or a close, in bounded memory (the daemon's
// RSS is sampled every 5 ms), while a client-go session kept open beside it
// goes on working; afterwards the daemon's fds and goroutines are back to
// where they were.
func TestBadInput(t *testing.T) {
	start := time.Now()
	const creationTimeout = 3 * time.Second
	// --pprof: /debug/pprof/heap?gc=1 runs a garbage collection, so that
	// the RSS measured after a case is what the daemon still holds, not
	// garbage an idle Go process has no reason to collect yet.
	d := startDaemon(t, "--read-header-timeout", "1s", "--stream-creation-timeout", creationTimeout.String(), "--pprof")
	ep := newEchoPod(t)
	sink := ep.listen(t, "tcp4", "127.0.0.1:0")
	go func() { // discards what it is sent
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	h := newHealthy(t, d, ep)
	var res results
	t.Cleanup(func() {
		t.Logf("bad-input suite: %v\n%s", time.Since(start).Round(100*time.Millisecond),
			res.table("case", "outcome", "RSS before → peak → after", "leaks"))
	})
	base := d.usage(t)
	t.Logf("baseline with the healthy session open: %v, RSS %d MiB", base, d.rssMiB(t))

	run := func(name string, body func(t *testing.T) string) {
		t.Run(name, func(t *testing.T) {
			before := d.usage(t)
			rss0 := d.rssMiB(t)
			sampler := d.sampleRSS()
			detail, leaks, peak, rssAfter := "", "not reached", -1, "?"
			defer func() {
				if peak < 0 {
					peak = sampler.peakMiB()
				}
				res.add(name, outcome(t, detail), fmt.Sprintf("%d → %d → %s MiB", rss0, peak, rssAfter), leaks)
			}()
			detail = body(t)
			h.check(t)
			peak = sampler.peakMiB()
			if peak >= rssPeakLimit*rssScale() {
				t.Errorf("daemon RSS peaked at %d MiB, limit %d MiB", peak, rssPeakLimit*rssScale())
			}
			after := d.settleWith(t, before, 1, 1, 30*time.Second) // the healthy session and its connection
			leaks = fmt.Sprintf("none: %d→%d fds, %v→%v goroutines", before.fds, after.fds, before.goroutines, after.goroutines)
			// Back under the bound, or at most a little above where the case
			// started: what one case retains must not be charged to the next.
			// (After a failed peak there is nothing more to learn.)
			limit := max(rssAfterLimit*rssScale(), rss0+16*rssScale())
			rss := d.rssMiB(t)
			if peak < rssPeakLimit*rssScale() {
				eventually(t, 30*time.Second, func() (bool, string) {
					d.collectGarbage(t)
					rss = d.rssMiB(t)
					return rss < limit, fmt.Sprintf("daemon RSS %d MiB after the case (and a GC), limit %d MiB", rss, limit)
				})
			}
			rssAfter = strconv.Itoa(rss)
		})
	}

	for _, c := range spdyCases {
		run("SPDY: "+c.name, func(t *testing.T) string {
			for _, tr := range spdyTransports {
				t.Run(tr, func(t *testing.T) { c.run(t, dialRawSPDY(t, d, ep.route(), tr), ep.port) })
			}
			return c.outcome
		})
	}
	for _, c := range spdyFloodCases {
		run("SPDY: "+c.name, func(t *testing.T) string {
			var outcomes []string
			for _, tr := range spdyTransports {
				t.Run(tr, func(t *testing.T) {
					outcomes = append(outcomes, tr+": "+spdyFlood(t, dialRawSPDY(t, d, ep.route(), tr), ep.port, c.frame, c.reply))
				})
			}
			return strings.Join(outcomes, "; ")
		})
	}
	run("SPDY: 10,000 unpaired streams on one session", func(t *testing.T) string {
		var detail string
		t.Run("default limit", func(t *testing.T) {
			detail = unpairedStreams(t, dialRawSPDY(t, d, ep.route(), "spdy"), ep.port, streams.DefaultMaxPendingPairs, creationTimeout)
		})
		t.Run("--max-pending-streams 100", func(t *testing.T) {
			d2 := startDaemon(t, "--max-pending-streams", "100", "--stream-creation-timeout", creationTimeout.String())
			h2 := newHealthy(t, d2, ep)
			unpairedStreams(t, dialRawSPDY(t, d2, ep.route(), "spdy"), ep.port, 100, creationTimeout)
			h2.check(t)
		})
		return detail + " (and with --max-pending-streams 100: 100 held)"
	})
	run("tunnel: one binary message of 40 MiB", func(t *testing.T) string {
		return tunnelBigMessage(t, d, ep)
	})
	run("tunnel: text message instead of binary", func(t *testing.T) string {
		c, br := rawWebSocket(t, d, ep.route(), "SPDY/3.1+portforward.k8s.io")
		c.Write(frame(0x1, []byte("not spdy"), 8))
		expectClosed(t, c, br)
		return "closed"
	})
	v4path := fmt.Sprintf("%s?port=%d&port=%d", ep.route(), ep.port, port(sink))
	for _, c := range v4Cases {
		run("WebSocket v4: "+c.name, func(t *testing.T) string {
			for _, mode := range c.modes {
				t.Run(mode, func(t *testing.T) {
					conn, br := rawWebSocket(t, d, v4path, mode)
					v := &rawV4{t: t, c: conn, br: br, base64: mode == "v4.base64.channel.k8s.io"}
					v.expectPrefixes(ep.port, port(sink))
					c.run(t, v)
				})
			}
			return c.outcome
		})
	}
	run("slowloris: 200 upgrades sending a byte per 100 ms", func(t *testing.T) string {
		return slowloris(t, d, h, ep.route(), 200, time.Second)
	})
	run("absurd paths and queries (HTTP/1.1)", func(t *testing.T) string {
		return absurdRequests(t, d, ep, port(sink))
	})
	run("absurd paths and queries (HTTP/2)", func(t *testing.T) string {
		return absurdH2(t, d, ep)
	})
	// Last: what a session costs once it has answered a stream. The Go
	// runtime keeps what this case grows for minutes, so the RSS bounds of
	// any case after it would measure this one.
	run("SPDY: 500 sessions that each open one stream", func(t *testing.T) string {
		return sessionsWithOneStream(t, d, ep, 500)
	})
	t.Run("after all of it", func(t *testing.T) {
		after := d.settleWith(t, base, 1, 1, 30*time.Second)
		h.check(t)
		res.add("after all of it: back to the baseline", outcome(t, "ok"), fmt.Sprintf("%d MiB now", d.rssMiB(t)),
			fmt.Sprintf("none: %d→%d fds, %v→%v goroutines", base.fds, after.fds, base.goroutines, after.goroutines))
	})
}

// tunnelBigMessage sends 40 MiB of valid SPDY frames (SETTINGS) as one
// WebSocket message of the tunnel, past the 32 MiB message limit of
// PROTOCOL.md. The tunnel is a byte stream, so either answer is bounded:
// close 1009, or the frames are read as they stream in and the session
// goes on.
func tunnelBigMessage(t *testing.T, d *daemon, ep *echoPod) string {
	s := dialRawSPDY(t, d, ep.route(), "tunnel")
	defer s.nc.Close()
	s.send(bytes.Repeat(settingsFrame(8191), 640), pingFrame(1))
	for {
		f, err := s.readFrame(60 * time.Second)
		var ce *websocket.CloseError
		switch {
		case errors.As(err, &ce) && ce.Code == websocket.CloseMessageTooBig:
			return "close 1009"
		case err != nil:
			t.Fatalf("after a 40 MiB tunnel message: %v, want close 1009 or the session going on", err)
		case f.control && f.typ == spdyPing && f.u32(0) == 1:
			s.pingID = 3
			s.echoPair(ep.port)
			return "accepted and streamed frame by frame (no 1009: the 32 MiB message limit of PROTOCOL.md's table is not applied to the tunnel); session goes on"
		case f.control && f.typ == spdyGoAway:
			t.Fatalf("after a 40 MiB tunnel message: %v", f)
		}
	}
}

// sessionsWithOneStream opens n SPDY sessions that each open one stream
// and hold it waiting for its pair: what one session costs the daemon once
// it has answered a stream.
func sessionsWithOneStream(t *testing.T, d *daemon, ep *echoPod, n int) string {
	heap0 := d.metric(t, "go_memstats_heap_inuse_bytes")
	var conns []*rawSPDY
	for i := range n {
		s := dialRawSPDY(t, d, ep.route(), "spdy")
		id := s.id()
		s.send(synStreamFrame(id, 0, s.block(portHeaders("error", strconv.Itoa(ep.port), "waiting"))))
		s.expect(fmt.Sprintf("SYN_REPLY(%d) on session %d", id, i), func(f spdyFrame) bool { return s.replyOrReset(f, id) })
		conns = append(conns, s)
	}
	heap := d.metric(t, "go_memstats_heap_inuse_bytes") - heap0
	rss := d.rssMiB(t)
	for _, s := range conns {
		s.nc.Close()
	}
	t.Logf("%d sessions with one stream each: heap in use +%.0f MiB (%.0f KiB per session), RSS %d MiB", n, heap/(1<<20), heap/float64(n)/1024, rss)
	// A session holds a 64 KiB read buffer and a 32 KiB inflater window;
	// what more it holds is multiplied by every session a client opens.
	if perSession := heap / float64(n); perSession > 256<<10 {
		t.Errorf("each session holds %.0f KiB of heap once it has answered one stream, want at most 256 KiB", perSession/1024)
	}
	return fmt.Sprintf("all answered; heap +%.0f MiB = %.0f KiB per session", heap/(1<<20), heap/float64(n)/1024)
}

// rawV4 is a hand-driven WebSocket v4 channel client.
type rawV4 struct {
	t      *testing.T
	c      net.Conn
	br     *bufio.Reader
	base64 bool
	n      int
}

// wsFrame encodes a masked client frame (zero mask key: payload as is).
func wsFrame(fin bool, rsv, opcode byte, payload []byte) []byte {
	b0 := rsv<<4 | opcode
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, 0, 0, 0, 0)
	return append(b, payload...)
}

// message encodes one v4 message on channel ch, as the mode frames it.
func (v *rawV4) message(ch byte, payload []byte) []byte {
	if v.base64 {
		return wsFrame(true, 0, websocket.TextMessage, append([]byte{'0' + ch}, base64.StdEncoding.EncodeToString(payload)...))
	}
	return wsFrame(true, 0, websocket.BinaryMessage, append([]byte{ch}, payload...))
}

func (v *rawV4) send(b []byte) {
	v.t.Helper()
	v.c.SetWriteDeadline(time.Now().Add(60 * time.Second))
	if _, err := v.c.Write(b); err != nil {
		v.t.Fatalf("send: %v", err)
	}
}

// read returns the next server message as channel and payload.
func (v *rawV4) read() (byte, []byte) {
	v.t.Helper()
	v.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(v.br, hdr); err != nil {
			v.t.Fatalf("read: %v", err)
		}
		n := int(hdr[1] & 0x7f)
		switch n {
		case 126:
			var l uint16
			binary.Read(v.br, binary.BigEndian, &l)
			n = int(l)
		case 127:
			var l uint64
			binary.Read(v.br, binary.BigEndian, &l)
			n = int(l)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(v.br, payload); err != nil {
			v.t.Fatalf("read: %v", err)
		}
		switch hdr[0] & 0x0f {
		case websocket.CloseMessage:
			v.t.Fatalf("the server closed the WebSocket: %v", payload)
		case websocket.BinaryMessage, websocket.TextMessage:
		default:
			continue
		}
		if len(payload) == 0 {
			v.t.Fatal("empty message")
		}
		if !v.base64 {
			return payload[0], payload[1:]
		}
		b, err := base64.StdEncoding.DecodeString(string(payload[1:]))
		if err != nil {
			v.t.Fatalf("server sent bad base64 %q: %v", payload, err)
		}
		return payload[0] - '0', b
	}
}

func (v *rawV4) expectPrefixes(ports ...int) {
	v.t.Helper()
	for i, p := range ports {
		for _, want := range []byte{byte(2 * i), byte(2*i + 1)} {
			ch, b := v.read()
			if ch != want || len(b) != 2 || int(binary.LittleEndian.Uint16(b)) != p {
				v.t.Fatalf("port prefix: channel %d %v, want channel %d port %d", ch, b, want, p)
			}
		}
	}
}

// echo sends one message to the echo port and checks that exactly it comes
// back: nothing that was dropped before reached the pod.
func (v *rawV4) echo() {
	v.t.Helper()
	v.n++
	msg := fmt.Sprintf("valid message %d", v.n)
	v.send(v.message(0, []byte(msg)))
	var got []byte
	for len(got) < len(msg) {
		ch, b := v.read()
		if ch != 0 {
			v.t.Fatalf("message on channel %d: %q", ch, b)
		}
		got = append(got, b...)
	}
	if string(got) != msg {
		v.t.Fatalf("the echo port got %q, want exactly %q", got, msg)
	}
}

// expectClose waits for the server's close frame and returns its code.
func (v *rawV4) expectClose() int {
	v.t.Helper()
	return expectClosed(v.t, v.c, v.br)
}

var bothV4 = []string{"v4.channel.k8s.io", "v4.base64.channel.k8s.io"}

var v4Cases = []struct {
	name    string
	modes   []string
	outcome string
	run     func(t *testing.T, v *rawV4)
}{
	{"bad channel bytes", bothV4, "dropped; session goes on", func(t *testing.T, v *rawV4) {
		for _, ch := range []byte{1, 3, 4, 9, 200, 255} {
			if v.base64 {
				v.send(wsFrame(true, 0, websocket.TextMessage, append([]byte{ch}, "bGVha2Vk"...))) // "leaked"
			} else {
				v.send(wsFrame(true, 0, websocket.BinaryMessage, append([]byte{ch}, "leaked"...)))
			}
		}
		v.send(wsFrame(true, 0, websocket.BinaryMessage, nil)) // empty
		v.echo()
	}},
	{"base64 garbage", []string{"v4.base64.channel.k8s.io"}, "dropped; session goes on", func(t *testing.T, v *rawV4) {
		v.send(wsFrame(true, 0, websocket.TextMessage, []byte("0!!!!")))
		v.send(wsFrame(true, 0, websocket.TextMessage, []byte("0abc")))
		v.send(wsFrame(true, 0, websocket.TextMessage, []byte("0====")))
		v.echo()
		// Valid base64 followed by garbage: the kubelet drops the whole
		// message (and PROTOCOL.md says undecodable base64 is dropped).
		v.send(wsFrame(true, 0, websocket.TextMessage, []byte("0"+base64.StdEncoding.EncodeToString([]byte("half-decoded "))+"@@@@")))
		v.echo()
	}},
	{"oversize message: one frame claiming 1 TiB", bothV4, "close 1009", func(t *testing.T, v *rawV4) {
		v.send(frame(0x2, []byte{2}, 1<<40))
		if code := v.expectClose(); code != websocket.CloseMessageTooBig {
			t.Fatalf("close code %d, want %d", code, websocket.CloseMessageTooBig)
		}
	}},
	{"oversize message: 40 fragments of 1 MiB", []string{"v4.channel.k8s.io"}, "close 1009 after 32 MiB, streamed", func(t *testing.T, v *rawV4) {
		chunk := make([]byte, 1<<20)
		v.send(wsFrame(false, 0, websocket.BinaryMessage, append([]byte{2}, chunk...))) // to the sink port
		for i := 1; i < 40; i++ {
			if _, err := v.c.Write(wsFrame(i == 39, 0, 0, chunk)); err != nil {
				break // the server may close before it has read everything
			}
		}
		if code := v.expectClose(); code != websocket.CloseMessageTooBig {
			t.Fatalf("close code %d, want %d", code, websocket.CloseMessageTooBig)
		}
	}},
	{"bad frames", []string{"v4.channel.k8s.io"}, "close 1002", func(t *testing.T, v *rawV4) {
		v.send(wsFrame(true, 0, 0x3, []byte{0, 'x'})) // reserved opcode
		if code := v.expectClose(); code != websocket.CloseProtocolError {
			t.Fatalf("reserved opcode: close code %d, want %d", code, websocket.CloseProtocolError)
		}
	}},
	{"RSV bits set", []string{"v4.channel.k8s.io"}, "close 1002", func(t *testing.T, v *rawV4) {
		v.send(wsFrame(true, 0x4, websocket.BinaryMessage, []byte{0, 'x'}))
		if code := v.expectClose(); code != websocket.CloseProtocolError {
			t.Fatalf("close code %d, want %d", code, websocket.CloseProtocolError)
		}
	}},
	{"unmasked client frame", []string{"v4.channel.k8s.io"}, "close 1002", func(t *testing.T, v *rawV4) {
		v.send([]byte{0x82, 2, 0, 'x'})
		if code := v.expectClose(); code != websocket.CloseProtocolError {
			t.Fatalf("close code %d, want %d", code, websocket.CloseProtocolError)
		}
	}},
	{"control frame of 126 bytes", []string{"v4.channel.k8s.io"}, "close 1002", func(t *testing.T, v *rawV4) {
		v.send(wsFrame(true, 0, websocket.PingMessage, make([]byte, 126)))
		if code := v.expectClose(); code != websocket.CloseProtocolError {
			t.Fatalf("close code %d, want %d", code, websocket.CloseProtocolError)
		}
	}},
	{"continuation without a first frame", []string{"v4.channel.k8s.io"}, "close 1002", func(t *testing.T, v *rawV4) {
		v.send(wsFrame(true, 0, 0, []byte{0, 'x'}))
		if code := v.expectClose(); code != websocket.CloseProtocolError {
			t.Fatalf("close code %d, want %d", code, websocket.CloseProtocolError)
		}
	}},
	{"frame cut off by the end of the connection", bothV4, "closed", func(t *testing.T, v *rawV4) {
		b := v.message(0, make([]byte, 1000))
		v.send(b[:20])
		v.c.(*net.TCPConn).CloseWrite()
		v.expectClose()
	}},
	{"100,000 messages for unknown channels", bothV4, "dropped; session goes on", func(t *testing.T, v *rawV4) {
		var batch []byte
		for i := range 100000 {
			batch = append(batch, v.message(byte(5+i%50), []byte("x"))...)
			if len(batch) > 1<<20 {
				v.send(batch)
				batch = batch[:0]
			}
		}
		v.send(batch)
		v.echo()
	}},
}

// slowloris opens conns connections that each send an upgrade request one
// byte per 100 ms, reconnecting when cut off, and checks that the daemon
// cuts each after the read-header timeout while a normal client keeps
// working beside them.
func slowloris(t *testing.T, d *daemon, h *healthy, route string, conns int, readHeaderTimeout time.Duration) string {
	req := []byte("GET " + route + "?port=80 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	type sample struct {
		lifetime time.Duration
		answer   []byte
		err      error
	}
	samples := make(chan sample, conns)
	stop := make(chan struct{})
	var open atomic.Int64
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			first := true
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.Dial("tcp4", d.addr)
				if err != nil {
					if first {
						samples <- sample{err: err}
					}
					return
				}
				open.Add(1)
				start := time.Now()
				answer := make(chan []byte, 1)
				go func() {
					c.SetReadDeadline(time.Now().Add(30 * time.Second))
					b, _ := io.ReadAll(c) // until the daemon closes the connection
					answer <- b
				}()
				tick := time.NewTicker(100 * time.Millisecond) // the attack's pace
				var got []byte
				for i, done := 0, false; !done; {
					select {
					case got = <-answer:
						done = true
					case <-tick.C:
						if i < len(req) {
							c.Write(req[i : i+1])
							i++
						}
					}
				}
				lifetime := time.Since(start)
				tick.Stop()
				c.Close()
				open.Add(-1)
				if first {
					samples <- sample{lifetime: lifetime, answer: got}
					first = false
				}
			}
		})
	}
	var stopOnce sync.Once
	stopAll := func() {
		stopOnce.Do(func() { close(stop) })
		wg.Wait()
	}
	defer stopAll()
	// A normal client works while the slow connections are there.
	var got []sample
	checks, minOpen := 0, int64(conns)
	for len(got) < conns {
		select {
		case s := <-samples:
			got = append(got, s)
		default:
			if n := open.Load(); n < minOpen && checks > 0 {
				minOpen = n
			}
			h.check(t)
			checks++
		}
	}
	stopAll()
	lo, hi := time.Hour, time.Duration(0)
	for _, s := range got {
		if s.err != nil {
			t.Fatalf("slow connection: %v", s.err)
		}
		if len(s.answer) > 0 && strings.HasPrefix(string(s.answer), "HTTP/1.1 101") {
			t.Fatalf("a slow request was upgraded: %q", s.answer)
		}
		lo, hi = min(lo, s.lifetime), max(hi, s.lifetime)
	}
	if lo < readHeaderTimeout-100*time.Millisecond || hi > readHeaderTimeout+3*time.Second {
		t.Fatalf("slow connections lived %v to %v; want about the read-header timeout %v", lo, hi, readHeaderTimeout)
	}
	if checks < 2 {
		t.Fatalf("only %d normal-client checks ran during the attack", checks)
	}
	return fmt.Sprintf("%d connections each cut after %v–%v, none answered; %d normal echoes passed meanwhile (≥ %d slow connections open)",
		conns, lo.Round(10*time.Millisecond), hi.Round(10*time.Millisecond), checks, minOpen)
}

const (
	secretAuth   = "Bearer pf-e2e-secret-7f3a"
	secretHeader = "pf-e2e-header-9c1d"
)

// absurd builds a request that carries secrets in its headers, which no
// refusal may echo.
func absurd(method, target, extra string) string {
	return method + " " + target + " HTTP/1.1\r\nHost: x\r\nAuthorization: " + secretAuth + "\r\nX-Pf-Secret: " + secretHeader + "\r\n" + extra + "\r\n"
}

func manyParams(n int, kv func(i int) string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = kv(i)
	}
	return strings.Join(parts, "&")
}

// checkRefusal checks a refusal: a 4xx, a short one-line body with no
// request header in it.
func checkRefusal(status int, body string) error {
	var problems []string
	if status < 400 || status > 499 {
		problems = append(problems, fmt.Sprintf("status %d, want 4xx", status))
	}
	if len(body) > shortBody {
		problems = append(problems, fmt.Sprintf("body of %d bytes (limit %d)", len(body), shortBody))
	}
	if strings.Count(strings.TrimSuffix(body, "\n"), "\n") != 0 {
		problems = append(problems, "body of more than one line")
	}
	for _, secret := range []string{secretAuth, secretHeader, "Authorization", "X-Pf-Secret"} {
		if strings.Contains(body, secret) {
			problems = append(problems, fmt.Sprintf("body echoes %q", secret))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	if len(body) > 120 {
		body = body[:120] + "…"
	}
	return fmt.Errorf("%s; body %q", strings.Join(problems, ", "), body)
}

func absurdRequests(t *testing.T, d *daemon, ep *echoPod, sinkPort int) string {
	spdyUp := "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n"
	wsUp := func(proto string) string {
		return "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: " + proto + "\r\n"
	}
	rawUp := "Connection: Upgrade\r\nUpgrade: connect-tcp\r\n"
	big := strings.Repeat("a", 64<<10)
	r := ep.route()
	type req struct{ name, raw string }
	reqs := []req{
		{"64 KiB pod name", absurd("POST", "/portForward/"+ep.namespace+"/"+big, spdyUp)},
		{"64 KiB namespace", absurd("POST", "/portForward/"+big+"/pod", spdyUp)},
		{"64 KiB uid", absurd("POST", r+"/"+big, spdyUp)},
		{"64 KiB path, no route", absurd("GET", "/"+big, "")},
		{"64 KiB token", absurd("GET", "/portforward/"+big, wsUp("v4.channel.k8s.io"))},
		{"64 KiB pod name, percent-encoded", absurd("POST", "/portForward/"+ep.namespace+"/"+strings.Repeat("%61", 21846), spdyUp)},
		{"10,000 query parameters (v4 ports)", absurd("GET", r+"?"+manyParams(10000, func(i int) string { return "port=" + strconv.Itoa(1+i%65535) }), wsUp("v4.channel.k8s.io"))},
		{"10,000 junk query parameters (v4)", absurd("GET", r+"?"+manyParams(10000, func(i int) string { return "a" + strconv.Itoa(i) + "=" + strconv.Itoa(i) }), wsUp("v4.channel.k8s.io"))},
		{"10,001 query parameters (over Go's limit)", absurd("GET", r+"?"+manyParams(10001, func(int) string { return "port=" + strconv.Itoa(ep.port) }), wsUp("v4.channel.k8s.io"))},
		{"10,000 query parameters (connect-tcp)", absurd("GET", r+"?"+manyParams(10000, func(int) string { return "port=" + strconv.Itoa(ep.port) }), rawUp)},
		{"invalid percent-encoding in the path", absurd("POST", "/portForward/"+ep.namespace+"/%zz", spdyUp)},
		{"invalid percent-encoding in the query", absurd("GET", r+"?port=%zz", wsUp("v4.channel.k8s.io"))},
		{"truncated percent-encoding in the query", absurd("GET", r+"?port=8%2", rawUp)},
		{"NUL byte in the path", absurd("POST", "/portForward/"+ep.namespace+"/a\x00b", spdyUp)},
		{"%00 in the pod name", absurd("POST", "/portForward/"+ep.namespace+"/a%00b", spdyUp)},
		{"%00 in the port", absurd("GET", r+"?port=80%00", wsUp("v4.channel.k8s.io"))},
		{"NUL byte in a header value", absurd("POST", r, "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\x00\r\n")},
		{"256 KiB of request headers", absurd("POST", r, spdyUp+"X-Big: "+strings.Repeat("b", 256<<10)+"\r\n")},
		{"64 KiB Sec-WebSocket-Protocol", absurd("GET", r+"?port=80", wsUp(strings.Repeat("p", 64<<10)))},
		{"64 KiB port value (v4)", absurd("GET", r+"?port="+strings.Repeat("1", 64<<10), wsUp("v4.channel.k8s.io"))},
		{"64 KiB port value (connect-tcp)", absurd("GET", r+"?port="+strings.Repeat("1", 64<<10), rawUp)},
	}
	for _, p := range []string{"0", "65536", "-1", "abc", "", "80,0", "99999999999999999999"} {
		q := "?port=" + p
		reqs = append(reqs,
			req{"port " + strconv.Quote(p) + " (v4)", absurd("GET", r+q, wsUp("v4.channel.k8s.io"))},
			req{"port " + strconv.Quote(p) + " (v4 base64)", absurd("GET", r+q, wsUp("v4.base64.channel.k8s.io"))},
			req{"port " + strconv.Quote(p) + " (connect-tcp)", absurd("GET", r+q, rawUp)})
	}
	failed := 0
	for _, rq := range reqs {
		t.Run(rq.name, func(t *testing.T) {
			resp, body := rawRequest(t, d.addr, rq.raw)
			if err := checkRefusal(resp.StatusCode, body); err != nil {
				failed++
				t.Error(err)
			}
		})
	}
	if failed > 0 {
		return fmt.Sprintf("%d of %d requests refused badly", failed, len(reqs))
	}
	return fmt.Sprintf("%d requests: each 4xx, one short line, no header echoed, connection closed", len(reqs))
}

func absurdH2(t *testing.T, d *daemon, ep *echoPod) string {
	client := h2Client()
	defer client.CloseIdleConnections()
	big := strings.Repeat("a", 60<<10) // under the 64 KiB header list limit HTTP/2 advertises
	base := "http://" + d.addr
	type req struct{ name, url string }
	reqs := []req{
		{"60 KiB pod name", base + "/portForward/" + ep.namespace + "/" + big + "?port=80"},
		{"60 KiB uid", base + ep.route() + "/" + big + "?port=80"},
		{"10,000 query parameters", base + ep.route() + "?" + manyParams(9999, func(int) string { return "a" }) + "&port=0"},
		{"60 KiB port value", base + ep.route() + "?port=" + strings.Repeat("1", 60<<10)},
		{"%00 in the pod name", base + "/portForward/" + ep.namespace + "/a%00b?port=80"},
	}
	for _, p := range []string{"0", "65536", "-1", "abc", ""} {
		reqs = append(reqs, req{"port " + strconv.Quote(p), base + ep.route() + "?port=" + p})
	}
	failed := 0
	for _, rq := range reqs {
		t.Run(rq.name, func(t *testing.T) {
			hr, err := http.NewRequest(http.MethodPost, rq.url, strings.NewReader(""))
			if err != nil {
				t.Fatal(err)
			}
			hr.Header.Set("Authorization", secretAuth)
			hr.Header.Set("X-Pf-Secret", secretHeader)
			resp, err := client.Do(hr)
			if err != nil {
				failed++
				msg := err.Error()
				if len(msg) > 200 {
					msg = msg[:100] + "…" + msg[len(msg)-100:]
				}
				t.Fatalf("request: %s", msg)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("answered over %s", resp.Proto)
			}
			if err := checkRefusal(resp.StatusCode, string(body)); err != nil {
				failed++
				t.Error(err)
			}
		})
	}
	if failed > 0 {
		return fmt.Sprintf("%d of %d requests refused badly", failed, len(reqs))
	}
	return fmt.Sprintf("%d requests: each 4xx, one short line, no header echoed", len(reqs))
}
