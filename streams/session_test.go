package streams

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"
)

// countingObserver records results so tests can assert them.
type countingObserver struct {
	mu       sync.Mutex
	started  int
	ended    map[string]int
	rejected map[string]int
}

func newCountingObserver() *countingObserver {
	return &countingObserver{ended: map[string]int{}, rejected: map[string]int{}}
}
func (o *countingObserver) ForwardStarted()            { o.mu.Lock(); o.started++; o.mu.Unlock() }
func (o *countingObserver) ForwardEnded(r string)      { o.mu.Lock(); o.ended[r]++; o.mu.Unlock() }
func (o *countingObserver) StreamRejected(r string)    { o.mu.Lock(); o.rejected[r]++; o.mu.Unlock() }
func (o *countingObserver) Transferred(Direction, int) {}
func (o *countingObserver) get(m func(*countingObserver) int) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return m(o)
}

// echoPod is a pod-side TCP server that echoes each connection until EOF.
func echoPod(t *testing.T) (port uint16) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func loopbackDial(ctx context.Context, port uint16) (PodConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp4", "127.0.0.1:"+strconv.Itoa(int(port)))
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

type sessionRig struct {
	client  httpstream.Connection
	raw     *net.TCPConn // the client's end of the connection
	session *Session
	obs     *countingObserver
	stop    context.CancelFunc // ends Run as a server's drain timeout does
	runDone chan struct{}
}

// newSessionRig connects apimachinery's SPDY client (the one client-go's
// port-forward uses) to a Session over a real loopback TCP connection.
func newSessionRig(t *testing.T, cfg Config) *sessionRig {
	t.Helper()
	return newSessionRigWith(t, cfg, SPDYOptions{})
}

// newSessionRigWith is newSessionRig with the engine's options.
func newSessionRigWith(t *testing.T, cfg Config, opts SPDYOptions) *sessionRig {
	t.Helper()
	c, s := tcpPair(t)
	r := &sessionRig{raw: c, obs: newCountingObserver(), runDone: make(chan struct{})}
	if cfg.Dial == nil {
		cfg.Dial = loopbackDial
	}
	if cfg.Observer == nil {
		cfg.Observer = r.obs
	}
	r.session = NewSession(cfg)
	conn := ServeSPDY(s, r.session.Accept, opts)
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	go func() {
		r.session.Run(ctx, conn)
		close(r.runDone)
	}()
	client, err := spdy.NewClientConnection(c)
	if err != nil {
		t.Fatal(err)
	}
	r.client = client
	t.Cleanup(func() {
		client.Close()
		r.waitRun(t)
		stop()
	})
	return r
}

func (r *sessionRig) waitRun(t *testing.T) {
	t.Helper()
	select {
	case <-r.runDone:
	case <-time.After(10 * time.Second):
		t.Fatal("Session.Run did not return")
	}
}

func streamHeaders(typ string, port uint16, requestID string) http.Header {
	h := http.Header{}
	h.Set(HeaderStreamType, typ)
	h.Set(HeaderPort, strconv.Itoa(int(port)))
	if requestID != "" {
		h.Set(HeaderRequestID, requestID)
	}
	return h
}

// openPair does what client-go's handleConnection does: an error stream,
// half-closed at once, then the data stream.
func (r *sessionRig) openPair(t *testing.T, port uint16, requestID string) (data, errs httpstream.Stream) {
	t.Helper()
	errs, err := r.client.CreateStream(streamHeaders(StreamTypeError, port, requestID))
	if err != nil {
		t.Fatalf("create error stream: %v", err)
	}
	errs.Close()
	data, err = r.client.CreateStream(streamHeaders(StreamTypeData, port, requestID))
	if err != nil {
		t.Fatalf("create data stream: %v", err)
	}
	return data, errs
}

func readErrorStream(t *testing.T, errs httpstream.Stream) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(errs)
		ch <- string(b)
	}()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("error stream did not end")
		return ""
	}
}

func echoThrough(t *testing.T, data httpstream.Stream, msg string) {
	t.Helper()
	if _, err := data.Write([]byte(msg)); err != nil {
		t.Fatalf("write data stream: %v", err)
	}
	data.Close()
	got, err := io.ReadAll(data)
	if err != nil || string(got) != msg {
		t.Fatalf("echo: got %q, %v; want %q", got, err, msg)
	}
}

func TestSessionForwardsPair(t *testing.T) {
	r := newSessionRig(t, Config{Pod: "ns/pod"})
	port := echoPod(t)
	data, errs := r.openPair(t, port, "0")
	echoThrough(t, data, "hello")
	if msg := readErrorStream(t, errs); msg != "" {
		t.Fatalf("error stream: got %q, want nothing", msg)
	}
	data.Reset() // as client-go does
	// A second connection on the same session.
	data, errs = r.openPair(t, port, "1")
	echoThrough(t, data, "again")
	if msg := readErrorStream(t, errs); msg != "" {
		t.Fatalf("second error stream: got %q, want nothing", msg)
	}
}

func TestSessionLegacyRequestIDs(t *testing.T) {
	r := newSessionRig(t, Config{})
	port := echoPod(t)
	// No requestID: the error stream (id 1) and the data stream (id 3)
	// pair through the kubelet's id/id-2 rule.
	data, errs := r.openPair(t, port, "")
	if data.Identifier() != errs.Identifier()+2 {
		t.Fatalf("stream ids %d and %d are not consecutive", errs.Identifier(), data.Identifier())
	}
	echoThrough(t, data, "legacy")
	if msg := readErrorStream(t, errs); msg != "" {
		t.Fatalf("error stream: got %q", msg)
	}
}

func TestSessionRejectsBadStreamsAndLivesOn(t *testing.T) {
	r := newSessionRig(t, Config{})
	port := echoPod(t)
	bad := []http.Header{
		{"Streamtype": {"data"}, "Requestid": {"9"}},                    // no port
		{"Streamtype": {"data"}, "Port": {"abc"}, "Requestid": {"9"}},   // bad port
		{"Streamtype": {"data"}, "Port": {"0"}, "Requestid": {"9"}},     // port 0
		{"Streamtype": {"bogus"}, "Port": {"80"}, "Requestid": {"9"}},   // bad type
		{"Port": {"80"}, "Requestid": {"9"}},                            // no type
		{"Streamtype": {"data"}, "Port": {"70000"}, "Requestid": {"9"}}, // > 65535
	}
	for _, h := range bad {
		if _, err := r.client.CreateStream(h); err == nil {
			t.Errorf("CreateStream(%v): accepted, want reset", h)
		}
	}
	if got := r.obs.get(func(o *countingObserver) int { return o.rejected[ResultRejected] }); got != len(bad) {
		t.Errorf("rejected streams: got %d, want %d", got, len(bad))
	}
	data, errs := r.openPair(t, port, "1")
	echoThrough(t, data, "still alive")
	readErrorStream(t, errs)
}

func TestSessionPairTimeout(t *testing.T) {
	r := newSessionRig(t, Config{CreationTimeout: 100 * time.Millisecond})
	errs, err := r.client.CreateStream(streamHeaders(StreamTypeError, 80, "5"))
	if err != nil {
		t.Fatal(err)
	}
	errs.Close()
	msg := readErrorStream(t, errs)
	if !strings.Contains(msg, "request=5) timed out waiting for streams") {
		t.Fatalf("error stream: got %q, want the kubelet's timeout text", msg)
	}
	if got := r.obs.get(func(o *countingObserver) int { return o.rejected[ResultTimeout] }); got != 1 {
		t.Fatalf("timed-out pairs: got %d, want 1", got)
	}
	// The data stream arriving late starts a new pair instead of joining
	// the expired one; the session still works.
	port := echoPod(t)
	data, errs := r.openPair(t, port, "6")
	echoThrough(t, data, "after timeout")
	readErrorStream(t, errs)
}

func TestSessionDialErrorIsWrittenAsKubeletText(t *testing.T) {
	dialErr := errors.New("dial localhost:81: connection refused")
	r := newSessionRig(t, Config{Pod: "ns/web", UID: "u-1", Dial: func(context.Context, uint16) (PodConn, error) {
		return nil, dialErr
	}})
	data, errs := r.openPair(t, 81, "0")
	want := "error forwarding port 81 to pod ns/web, uid u-1: dial localhost:81: connection refused"
	if msg := readErrorStream(t, errs); msg != want {
		t.Fatalf("error stream: got %q, want %q", msg, want)
	}
	if b, _ := io.ReadAll(data); len(b) != 0 {
		t.Fatalf("data stream carried %q after a failed dial", b)
	}
	if got := r.obs.get(func(o *countingObserver) int { return o.ended[ResultDialError] }); got != 1 {
		t.Fatalf("dial errors: got %d, want 1", got)
	}
}

func TestSessionRejectsDuplicateStream(t *testing.T) {
	r := newSessionRig(t, Config{})
	port := echoPod(t)
	errs, err := r.client.CreateStream(streamHeaders(StreamTypeError, port, "3"))
	if err != nil {
		t.Fatal(err)
	}
	errs.Close()
	if _, err := r.client.CreateStream(streamHeaders(StreamTypeError, port, "3")); err == nil {
		t.Fatal("second error stream for request 3 was accepted")
	}
	data, err := r.client.CreateStream(streamHeaders(StreamTypeData, port, "3"))
	if err != nil {
		t.Fatal(err)
	}
	echoThrough(t, data, "first pair intact")
	if msg := readErrorStream(t, errs); msg != "" {
		t.Fatalf("error stream: got %q", msg)
	}
}

func TestSessionConcurrentPairs(t *testing.T) {
	r := newSessionRig(t, Config{})
	port := echoPod(t)
	const n = 100
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := strconv.Itoa(i)
			errs, err := r.client.CreateStream(streamHeaders(StreamTypeError, port, id))
			if err != nil {
				errc <- err
				return
			}
			errs.Close()
			data, err := r.client.CreateStream(streamHeaders(StreamTypeData, port, id))
			if err != nil {
				errc <- err
				return
			}
			msg := strings.Repeat(id, 1000)
			data.Write([]byte(msg))
			data.Close()
			got, err := io.ReadAll(data)
			if err != nil || string(got) != msg {
				errc <- fmt.Errorf("pair %s: echo %d bytes, %v", id, len(got), err)
			}
			data.Reset()
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestSessionDrainFinishesActiveForwards(t *testing.T) {
	r := newSessionRig(t, Config{})
	port := echoPod(t)
	data, errs := r.openPair(t, port, "0")
	if _, err := data.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(data, buf); err != nil {
		t.Fatal(err)
	}
	r.session.Drain()
	if _, err := r.client.CreateStream(streamHeaders(StreamTypeError, port, "1")); err == nil {
		t.Fatal("a new stream was accepted while draining")
	}
	select {
	case <-r.runDone:
		t.Fatal("Run returned while a forward was active")
	default:
	}
	// The active forward still completes normally.
	data.Write([]byte("pong"))
	data.Close()
	rest, err := io.ReadAll(data)
	if err != nil || string(rest) != "pong" {
		t.Fatalf("after Drain: read %q, %v", rest, err)
	}
	readErrorStream(t, errs)
	r.waitRun(t)
}

func TestSessionEndAbortsForwards(t *testing.T) {
	r := newSessionRig(t, Config{})
	accepted := make(chan net.Conn, 1)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	data, _ := r.openPair(t, port, "0")
	pod := <-accepted
	defer pod.Close()
	// A byte through from the pod: the dial is done and the pump runs.
	if _, err := pod.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(data, make([]byte, 1)); err != nil {
		t.Fatalf("read the pod's byte: %v", err)
	}
	r.client.Close() // the client goes away with the forward open
	r.waitRun(t)
	pod.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(pod); err != nil && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("pod connection after session end: %v, want it closed", err)
	}
	if got := r.obs.get(func(o *countingObserver) int { return o.ended[ResultAborted] + o.ended[ResultReset] }); got != 1 {
		t.Fatalf("aborted forwards: got %d, want 1 (%v)", got, r.obs.ended)
	}
}

// endedObserver tells each ForwardEnded on a channel.
type endedObserver struct {
	NopObserver
	ended chan string
}

func (o endedObserver) ForwardEnded(r string) { o.ended <- r }

// TestSessionClientResetEndsForwardBlockedOnPod: a client that resets its
// data stream while the pump is blocked writing to a pod that does not
// read ends the forward at once, counted as reset, and the pod's
// connection is closed. The pump was waiting in the write, and held the
// pod's socket and its goroutines until the pod read or the session ended.
func TestSessionClientResetEndsForwardBlockedOnPod(t *testing.T) {
	small := func(opt int) func(string, string, syscall.RawConn) error {
		return func(_, _ string, rc syscall.RawConn) error {
			rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 4096) })
			return nil
		}
	}
	lc := net.ListenConfig{Control: small(syscall.SO_RCVBUF)}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	podReading := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.ReadFull(c, make([]byte, 1)) // the pump runs; then the pod reads no more
		podReading <- c
	}()
	dial := func(ctx context.Context, port uint16) (PodConn, error) {
		d := net.Dialer{Control: small(syscall.SO_SNDBUF)}
		c, err := d.DialContext(ctx, "tcp4", "127.0.0.1:"+strconv.Itoa(int(port)))
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
	obs := endedObserver{ended: make(chan string, 1)}
	r := newSessionRig(t, Config{Dial: dial, Observer: obs})
	data, _ := r.openPair(t, uint16(ln.Addr().(*net.TCPAddr).Port), "0")
	if _, err := data.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var pod net.Conn
	select {
	case pod = <-podReading:
		defer pod.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the pod did not get the first byte")
	}
	// Far more than the two sockets hold, far less than the stream's
	// buffer: the pump ends up blocked in its write to the pod.
	if _, err := data.Write(make([]byte, 2<<20)); err != nil {
		t.Fatal(err)
	}
	data.Reset()
	select {
	case res := <-obs.ended:
		if res != ResultReset {
			t.Errorf("forward ended as %q, want %q", res, ResultReset)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the forward still runs 5 s after the client reset its data stream")
	}
	// The pod's connection is closed: it reads what was sent, then EOF.
	pod.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, pod); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("pod connection after the reset: %v, want it closed", err)
	}
}

// dialUntilCanceled is a Config.Dial that closes dialing when it is
// called, once, and fails only when its context ends, as a dial to a pod
// that drops SYNs does.
func dialUntilCanceled(dialing chan struct{}) func(context.Context, uint16) (PodConn, error) {
	return func(ctx context.Context, port uint16) (PodConn, error) {
		close(dialing)
		<-ctx.Done()
		return nil, fmt.Errorf("dial: %w", ctx.Err())
	}
}

// TestSessionEndWhileDialingIsAnAbort: a session that ends while a pair's
// pod is being dialed, because its connection broke or the server stopped
// it, ends that forward as aborted with nothing on the error stream, as it
// ends a forward whose pump runs. The canceled dial was a dial error (or,
// for a broken connection, a reset), and its text ("error forwarding
// port ... context canceled") went to the client ahead of the GOAWAY.
func TestSessionEndWhileDialingIsAnAbort(t *testing.T) {
	for _, how := range []string{"connection broken", "server stops"} {
		t.Run(how, func(t *testing.T) {
			dialing := make(chan struct{})
			obs := endedObserver{ended: make(chan string, 1)}
			r := newSessionRig(t, Config{Observer: obs, Dial: dialUntilCanceled(dialing)})
			_, errs := r.openPair(t, 80, "0")
			<-dialing
			if how == "connection broken" {
				r.raw.Close()
			} else {
				r.stop()
				if msg := readErrorStream(t, errs); msg != "" {
					t.Errorf("error stream: got %q, want nothing", msg)
				}
			}
			select {
			case res := <-obs.ended:
				if res != ResultAborted {
					t.Errorf("forward ended as %q, want %q", res, ResultAborted)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the forward did not end")
			}
			r.waitRun(t)
		})
	}
}

// finished reports whether spdystream, client-go's SPDY stream, has
// taken the stream as over: the server reset it, or the client sent its
// FIN and the server its own. A stream the server only half-closed is
// not finished while the client has not half-closed it.
func finished(t *testing.T, s httpstream.Stream) bool {
	t.Helper()
	f, ok := s.(interface{ IsFinished() bool })
	if !ok {
		t.Fatalf("%T has no IsFinished", s)
	}
	return f.IsFinished()
}

// TestSessionPairTimeoutResetsALoneDataStream: a data stream whose error
// stream never comes is reset once the creation timeout ends, so its
// client is not left waiting on it for as long as the session lasts.
// Kills expire leaving a lone data stream open.
func TestSessionPairTimeoutResetsALoneDataStream(t *testing.T) {
	r := newSessionRig(t, Config{CreationTimeout: 100 * time.Millisecond})
	data, err := r.client.CreateStream(streamHeaders(StreamTypeData, 80, "7"))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the lone data stream reset", func() bool { return finished(t, data) })
	if got := r.obs.get(func(o *countingObserver) int { return o.rejected[ResultTimeout] }); got != 1 {
		t.Fatalf("timed-out pairs: got %d, want 1", got)
	}
}

// TestSessionDialErrorResetsTheDataStream: after a failed dial the data
// stream is reset, not only half-closed: the server lets go of it whether
// or not the client ever closes it. Kills the dial error ending the two
// streams with FINs.
func TestSessionDialErrorResetsTheDataStream(t *testing.T) {
	r := newSessionRig(t, Config{Dial: func(context.Context, uint16) (PodConn, error) {
		return nil, errors.New("connection refused")
	}})
	data, errs := r.openPair(t, 81, "0")
	if msg := readErrorStream(t, errs); !strings.HasPrefix(msg, "error forwarding port 81") {
		t.Fatalf("error stream: got %q, want the dial error", msg)
	}
	waitUntil(t, "the data stream reset", func() bool { return finished(t, data) })
}

// TestSessionReadsWhatTheClientSendsOnTheErrorStream: a client that
// writes on its error stream instead of half-closing it does not hold up
// the connection's frame reader, and with it its pair's data, once its
// stream buffer is full: the session reads the error stream to its end.
// Kills forward leaving the error stream unread.
func TestSessionReadsWhatTheClientSendsOnTheErrorStream(t *testing.T) {
	r := newSessionRigWith(t, Config{}, SPDYOptions{StreamBuffer: 64 << 10, StallTimeout: time.Minute})
	port := echoPod(t)
	errs, err := r.client.CreateStream(streamHeaders(StreamTypeError, port, "1"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := r.client.CreateStream(streamHeaders(StreamTypeData, port, "1"))
	if err != nil {
		t.Fatal(err)
	}
	// spdystream ignores flow control: 1 MiB is sixteen times the
	// stream's buffer.
	wrote := make(chan error, 1)
	go func() { _, err := errs.Write(make([]byte, 1<<20)); wrote <- err }()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("write the error stream: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("1 MiB on the error stream not taken in 10 s")
	}
	const msg = "behind the error stream's bytes"
	echoed := make(chan string, 1)
	go func() {
		data.Write([]byte(msg))
		data.Close()
		got, _ := io.ReadAll(data)
		echoed <- string(got)
	}()
	select {
	case got := <-echoed:
		if got != msg {
			t.Fatalf("echo: got %q, want %q", got, msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pair's data did not come through in 10 s")
	}
	errs.Close()
	if msg := readErrorStream(t, errs); msg != "" {
		t.Fatalf("error stream: got %q, want nothing", msg)
	}
}

// opLog records what a session does to the streams of a spyStream.
type opLog struct {
	mu  sync.Mutex
	ops []string
}

func (l *opLog) add(op string) { l.mu.Lock(); l.ops = append(l.ops, op); l.mu.Unlock() }
func (l *opLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ops...)
}

// spyStream is an engine's stream that logs the session's writes,
// half-closes and resets (and hides the stream's optional interfaces).
type spyStream struct {
	Stream
	log *opLog
}

func (s spyStream) Write(p []byte) (int, error) { s.log.add("write"); return s.Stream.Write(p) }
func (s spyStream) CloseWrite() error           { s.log.add("fin"); return s.Stream.CloseWrite() }
func (s spyStream) Reset() error                { s.log.add("reset"); return s.Stream.Reset() }

// newSpyRig is newSessionRig whose session sees each error stream
// through a spyStream logging to the returned log, and each data stream
// through one logging to the second.
func newSpyRig(t *testing.T, cfg Config) (*sessionRig, *opLog, *opLog) {
	t.Helper()
	c, s := tcpPair(t)
	log, dataLog := &opLog{}, &opLog{}
	if cfg.Dial == nil {
		cfg.Dial = loopbackDial
	}
	session := NewSession(cfg)
	conn := ServeSPDY(s, func(st Stream) error {
		if st.Headers().Get(HeaderStreamType) == StreamTypeError {
			st = spyStream{st, log}
		} else {
			st = spyStream{st, dataLog}
		}
		return session.Accept(st)
	}, SPDYOptions{})
	r := &sessionRig{raw: c, session: session, runDone: make(chan struct{})}
	go func() { session.Run(context.Background(), conn); close(r.runDone) }()
	client, err := spdy.NewClientConnection(c)
	if err != nil {
		t.Fatal(err)
	}
	r.client = client
	t.Cleanup(func() { client.Close(); r.waitRun(t) })
	return r, log, dataLog
}

// waitReset waits for the session to reset the spied error stream and
// returns what it did to it, comma-separated.
func (l *opLog) waitReset(t *testing.T) string {
	t.Helper()
	waitUntil(t, "the error stream reset", func() bool { ops := l.get(); return len(ops) > 0 && ops[len(ops)-1] == "reset" })
	return strings.Join(l.get(), ",")
}

// TestSessionErrorStreamEndsWithAnEmptyFIN: the error stream of a forward
// that ended with EOF both ways gets our FIN with nothing before it, and
// only then the session lets go of it: a client that tells a FIN from a
// reset (a raw SPDY one; spdystream reads EOF for both) reads a clean end,
// as PROTOCOL.md says. Kills the forward resetting it without a FIN.
func TestSessionErrorStreamEndsWithAnEmptyFIN(t *testing.T) {
	r, log, _ := newSpyRig(t, Config{})
	data, errs := r.openPair(t, echoPod(t), "0")
	echoThrough(t, data, "hello")
	if msg := readErrorStream(t, errs); msg != "" {
		t.Fatalf("error stream: got %q, want nothing", msg)
	}
	if got := log.waitReset(t); got != "fin,reset" {
		t.Fatalf("the session did %s to the error stream, want fin,reset", got)
	}
}

// TestSessionPairTimeoutTextEndsWithAFIN: the timeout's text on a lone
// error stream is followed by FIN, then the stream is let go of, as
// PROTOCOL.md says. Kills expire resetting it right after the text.
func TestSessionPairTimeoutTextEndsWithAFIN(t *testing.T) {
	r, log, _ := newSpyRig(t, Config{CreationTimeout: 100 * time.Millisecond})
	errs, err := r.client.CreateStream(streamHeaders(StreamTypeError, 80, "5"))
	if err != nil {
		t.Fatal(err)
	}
	errs.Close()
	if msg := readErrorStream(t, errs); !strings.Contains(msg, "timed out waiting for streams") {
		t.Fatalf("error stream: got %q, want the timeout text", msg)
	}
	if got := log.waitReset(t); got != "write,fin,reset" {
		t.Fatalf("the session did %s to the error stream, want write,fin,reset", got)
	}
}

// TestSessionDialErrorTextEndsWithAFIN: after a failed dial the error
// stream gets the text and then our FIN before the session lets go of it,
// as the kubelet ends it (its portForward's deferred Close is a
// half-close): a client that tells a FIN from a reset (a raw SPDY one;
// spdystream reads EOF for both) reads a clean end after the text. The
// data stream is reset, nothing else (TestSessionDialErrorResetsTheDataStream).
func TestSessionDialErrorTextEndsWithAFIN(t *testing.T) {
	r, log, dataLog := newSpyRig(t, Config{Dial: func(context.Context, uint16) (PodConn, error) {
		return nil, errors.New("connection refused")
	}})
	_, errs := r.openPair(t, 81, "0")
	if msg := readErrorStream(t, errs); !strings.HasPrefix(msg, "error forwarding port 81") {
		t.Fatalf("error stream: got %q, want the dial error", msg)
	}
	if got := log.waitReset(t); got != "write,fin,reset" {
		t.Fatalf("the session did %s to the error stream, want write,fin,reset", got)
	}
	if got := dataLog.waitReset(t); got != "reset" {
		t.Fatalf("the session did %s to the data stream, want reset", got)
	}
}

// TestSessionDrainResetsIncompletePairs: Drain resets the streams of
// pairs still waiting for their second stream, counted as rejected, while
// a forward in flight goes on. Kills Drain emptying the table and
// forgetting its pairs, whose streams then stayed open, uncounted, for as
// long as the forward ran.
func TestSessionDrainResetsIncompletePairs(t *testing.T) {
	r := newSessionRig(t, Config{})
	port := echoPod(t)
	data, errs := r.openPair(t, port, "0")
	lone, err := r.client.CreateStream(streamHeaders(StreamTypeData, port, "1"))
	if err != nil {
		t.Fatal(err)
	}
	r.session.Drain()
	waitUntil(t, "the lone data stream reset", func() bool { return finished(t, lone) })
	if got := r.obs.get(func(o *countingObserver) int { return o.rejected[ResultRejected] }); got != 1 {
		t.Fatalf("rejected streams: got %d, want 1", got)
	}
	echoThrough(t, data, "the forward in flight goes on")
	readErrorStream(t, errs)
	r.waitRun(t)
}

// TestSessionEndCountsIncompletePairs: a pair still waiting for its
// second stream when the session ends is counted as rejected, as every
// stream that never became a forwarded connection is. Kills Run leaving
// its pairs to the connection's close, which resets them uncounted.
func TestSessionEndCountsIncompletePairs(t *testing.T) {
	r := newSessionRig(t, Config{})
	errs, err := r.client.CreateStream(streamHeaders(StreamTypeError, 80, "1"))
	if err != nil {
		t.Fatal(err)
	}
	errs.Close()
	r.client.Close()
	r.waitRun(t)
	if got := r.obs.get(func(o *countingObserver) int { return o.rejected[ResultRejected] }); got != 1 {
		t.Fatalf("rejected streams: got %d, want 1", got)
	}
}

// TestSessionClientResetDuringTheDialGivesItUp: a client that resets its
// data stream while the pod is being dialed has the dial given up at
// once, counted as a reset, not as a dial error. Kills the forward's
// context not following the data stream's reset, which left the dial
// (its goroutine, its namespace fd) running until it timed out or the
// session ended.
func TestSessionClientResetDuringTheDialGivesItUp(t *testing.T) {
	dialing := make(chan struct{})
	obs := endedObserver{ended: make(chan string, 1)}
	r := newSessionRig(t, Config{Observer: obs, Dial: dialUntilCanceled(dialing)})
	data, _ := r.openPair(t, 80, "0")
	<-dialing
	data.Reset()
	select {
	case res := <-obs.ended:
		if res != ResultReset {
			t.Errorf("forward ended as %q, want %q", res, ResultReset)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the dial still runs 10 s after the client reset its data stream")
	}
}
