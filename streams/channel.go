package streams

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/portforwardd/portforwardd/streams/internal/pipe"
)

// Limits of the WebSocket v4 channel protocol.
const (
	// MaxChannelPorts bounds the ports of one v4 WebSocket; channel ids
	// are one byte (in base64 mode one character, '0'+channel, which
	// takes two bytes of UTF-8 from channel 80 on).
	MaxChannelPorts = 64
	// maxWSMessage is the largest message accepted, x/net/websocket's
	// default, which the kubelet's wsstream uses. Messages are streamed,
	// so this bounds time, not memory.
	maxWSMessage = 32 << 20
	// maxBase64Message bounds a message of v4.base64.channel.k8s.io: such
	// a message is held whole until it is decoded (undecodable ones are
	// dropped, as the kubelet drops them), so it is kept smaller.
	maxBase64Message = 4 << 20
	// channelInbox bounds the bytes queued for one port whose pod is not
	// reading. v4 has no flow control: past this the reader waits.
	channelInbox = 256 << 10
	// maxMessage bounds the data messages sent to the client.
	maxMessage = 128 << 10
	// readBufSize is the buffer a session reads messages through.
	readBufSize = 128 << 10
	// closeGrace is how long the ports of a WebSocket the client closed
	// (with a close frame) get to pass on what the client sent before it
	// and to end: the second between the two directions of a forwarded
	// connection that containerd and CRI-O give behind the kubelet.
	closeGrace = time.Second
)

var readBufPool = sync.Pool{New: func() any { return new([readBufSize]byte) }}

// ChannelConfig configures ServeChannels.
type ChannelConfig struct {
	// Ports are forwarded in order: port i uses channel 2i for data and
	// 2i+1 for errors.
	Ports []uint16
	// Base64 selects v4.base64.channel.k8s.io framing: an ASCII digit
	// channel id and a base64 payload in text messages.
	Base64 bool
	// Pod and UID appear in error texts.
	Pod, UID string
	// Dial connects to a port of the pod. Required.
	Dial DialFunc
	// IdleTimeout closes the WebSocket after this long without a message
	// either way; zero disables it.
	IdleTimeout time.Duration
	// Global, if set, is the budget shared with other sessions and SPDY
	// connections for the client data held for pods that have not read
	// it: the reader pauses while it is spent (see NewBudget).
	Global *Budget
	// StallTimeout is how long the reader waits for Global before it
	// resets the stale buffer holding the most of it, a port of any
	// session or a stream of any SPDY connection sharing it; a port is
	// stale once nothing has been put in or read from it for
	// StallTimeout. Zero means DefaultStallTimeout, SPDY's.
	StallTimeout time.Duration
	// OnLimit, if set, is told when the reader pauses for Global, with
	// LimitGlobalBuffer, and when a stale port is reset, with
	// LimitStreamBuffer (then on the goroutine of whichever reader
	// reclaimed the budget). It must not block.
	OnLimit func(limit string)
	// Observer receives counts; nil means NopObserver.
	Observer Observer
	// Log receives per-port events; nil discards them.
	Log *slog.Logger
}

// ServeChannels speaks the WebSocket v4 channel protocol of the kubelet's
// port-forward on an upgraded WebSocket: it announces every port on its
// data and error channels (uint16, little endian), dials each port at once,
// and pumps each port's data channel to its pod connection. A failed dial
// is written as the kubelet's text on the port's error channel; the other
// ports go on. v4 has no half-close: a port ends when its pod connection
// does. When every port has ended ServeChannels sends a close frame (1000)
// and closes ws. When the client closes the WebSocket first, each pod gets
// what the client sent before the close, then EOF, and closeGrace to end;
// when the connection breaks, or ctx is done, every pod connection is
// closed at once (ctx's end is the server's, and the client gets a close
// frame 1001, going away). A port holding client data that neither its
// pod nor the client has moved for StallTimeout may be reset while Global
// is spent, as a pod resetting its connection would end it: nothing is
// written on its error channel. ServeChannels returns when all of that is
// over.
func ServeChannels(ctx context.Context, ws *websocket.Conn, cfg ChannelConfig) {
	s := &chanSession{ws: ws, cfg: cfg, obs: cfg.Observer, log: cfg.Log}
	if s.cfg.StallTimeout <= 0 {
		s.cfg.StallTimeout = DefaultStallTimeout
	}
	if s.obs == nil {
		s.obs = NopObserver{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.run(ctx)
}

type chanSession struct {
	ws  *websocket.Conn
	cfg ChannelConfig
	obs Observer
	log *slog.Logger

	wmu     sync.Mutex // one message writer at a time; guards scratch
	scratch []byte     // the message being written, reused
	pongs   pongs      // the answers to pings, written beside the messages
	ports   []*chanPort

	// clientClosed is set when the client's close frame arrives, before
	// it is answered: from then on what the pods send has no reader and
	// is dropped, and what the client sent before is still delivered.
	clientClosed atomic.Bool
}

func (s *chanSession) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.cfg.Base64 {
		s.ws.SetReadLimit(maxBase64Message)
	} else {
		s.ws.SetReadLimit(maxWSMessage)
	}
	s.touch()
	s.pongs = pongs{ws: s.ws, deadline: s.writeDeadline}
	s.ws.SetPingHandler(func(data string) error {
		s.touch()
		s.pongs.ping(data)
		return nil
	})
	answerClose := s.ws.CloseHandler()
	s.ws.SetCloseHandler(func(code int, text string) error {
		s.clientClosed.Store(true)
		return answerClose(code, text)
	})

	for i, port := range s.cfg.Ports {
		p := &chanPort{s: s, index: i, port: port, in: pipe.New(channelInbox)}
		p.ctx, p.cancel = context.WithCancelCause(ctx)
		p.touch()
		p.in.OnPut = func(n int) { p.touch(); s.cfg.Global.Add(int64(n)) }
		p.in.OnRead = func(n int) { p.touch(); s.cfg.Global.Add(-int64(n)) }
		s.ports = append(s.ports, p)
	}
	s.cfg.Global.Join(s)
	defer s.cfg.Global.Leave(s)
	for _, p := range s.ports {
		var prefix [2]byte
		binary.LittleEndian.PutUint16(prefix[:], p.port)
		if s.write(p.dataChannel(), prefix[:]) != nil || s.write(p.errorChannel(), prefix[:]) != nil {
			s.ws.Close()
			return
		}
	}

	readDone := make(chan struct{})
	go s.readLoop(ctx, readDone)
	var wg sync.WaitGroup
	for _, p := range s.ports {
		wg.Add(1)
		go p.forward(&wg)
	}
	allDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(allDone)
	}()

	select {
	case <-allDone:
		s.pongs.flush(time.Second)
		s.wmu.Lock()
		s.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		s.wmu.Unlock()
	case <-readDone:
		if s.clientClosed.Load() {
			// The client closed the WebSocket: the pods get what it sent
			// before, then EOF, and closeGrace to end.
			grace := time.NewTimer(closeGrace)
			select {
			case <-allDone:
			case <-grace.C:
			case <-ctx.Done():
			}
			grace.Stop()
		}
		// Otherwise the connection broke: abort what is left.
	case <-ctx.Done():
		// The server is going down (a drain cut short): say so, as the
		// end of a session the server chooses. Not under wmu: a port's
		// write may be waiting on a client that does not read, and
		// gorilla's WriteControl waits for it at most until the
		// deadline.
		s.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
	}
	cancel()
	s.ws.Close()
	<-readDone
	<-allDone
}

// touch pushes the idle deadline out, as the kubelet's resetTimeout does
// on every message.
func (s *chanSession) touch() {
	if s.cfg.IdleTimeout > 0 {
		d := time.Now().Add(s.cfg.IdleTimeout)
		s.ws.SetReadDeadline(d)
	}
}

// readLoop delivers data-channel messages to their ports. Messages for
// error channels, unknown channels, empty messages and undecodable base64
// are dropped, as the kubelet drops them. When the client closes the
// WebSocket each port's pod reads what is still queued for it, then EOF;
// when the connection breaks the queued bytes are dropped.
func (s *chanSession) readLoop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	defer func() {
		for _, p := range s.ports {
			if s.clientClosed.Load() {
				p.in.Finish(io.EOF)
			} else {
				p.abort(fmt.Errorf("websocket: %w", ErrConnClosed))
			}
		}
	}()
	var hdr [1]byte
	var text bytes.Buffer // a base64 message
	var decodedBuf []byte
	for {
		_, r, err := s.ws.NextReader()
		if err != nil {
			s.log.Debug("websocket read ended", "err", err)
			return
		}
		s.touch()
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			continue // empty message
		}
		ch := int(hdr[0])
		if s.cfg.Base64 {
			if ch >= utf8.RuneSelf {
				ch = readChannelRune(r, hdr[0])
			}
			ch -= '0'
		}
		if ch < 0 || ch%2 != 0 || ch/2 >= len(s.ports) {
			s.log.Debug("message for an unknown or error channel dropped", "channel", ch)
			continue
		}
		p := s.ports[ch/2]
		if s.cfg.Base64 {
			// Decoded whole, or dropped whole: no half of a message that
			// turns out undecodable reaches the pod.
			text.Reset()
			if _, err := text.ReadFrom(r); err != nil {
				s.log.Debug("websocket read ended", "err", err)
				return
			}
			decoded, err := base64.StdEncoding.AppendDecode(decodedBuf[:0], text.Bytes())
			if err != nil {
				s.log.Debug("undecodable base64 message dropped", "channel", ch, "err", err)
				continue
			}
			if !s.waitBudget(ctx) || !s.put(ctx, p, decoded) {
				return
			}
			decodedBuf = decoded
			if text.Cap() > 256<<10 { // let a rare large message's memory go
				text, decodedBuf = bytes.Buffer{}, nil
			}
			continue
		}
		if !s.putMessage(ctx, p, ch, r) {
			return
		}
	}
}

// readChannelRune reads the rest of a base64 message's channel character,
// whose UTF-8 encoding starts with the byte lead, and returns the
// character (utf8.RuneError for none). The kubelet writes channels from 80
// on so (Go's string('0'+channel)), and reads only the first byte back,
// which makes such ports' data undeliverable there; here a client that
// writes the character as it reads it reaches them. Channels of
// MaxChannelPorts ports take two bytes at most: a longer character names
// no channel, and the message is dropped.
func readChannelRune(r io.Reader, lead byte) int {
	var b [2]byte
	b[0] = lead
	if _, err := io.ReadFull(r, b[1:]); err != nil {
		return utf8.RuneError
	}
	ch, _ := utf8.DecodeRune(b[:])
	return int(ch)
}

// putMessage streams the rest of a binary message to port p, through a
// read buffer taken for this message only: an idle session, its reader
// waiting for the next message, holds none. False when the session
// ends meanwhile (see put).
func (s *chanSession) putMessage(ctx context.Context, p *chanPort, ch int, r io.Reader) bool {
	buf := readBufPool.Get().(*[readBufSize]byte)
	defer readBufPool.Put(buf)
	for {
		n, err := r.Read(buf[:])
		if n > 0 {
			if !s.waitBudget(ctx) || !s.put(ctx, p, buf[:n]) {
				return false
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.log.Debug("message dropped", "channel", ch, "err", err)
			}
			return true
		}
	}
}

// stallCheck is how long the reader waits on a port's full queue before
// it looks whether the client's connection is still there, and between
// two looks.
const stallCheck = time.Second

// put queues b for port p, waiting while the port's queue is full. The
// reader reads nothing from the connection meanwhile, so it cannot see
// the client go away: every stallCheck it looks at the TCP connection's
// state instead, and gives up (false) once the connection has been reset
// or has timed out, or ctx is done. A pod that does not read would
// otherwise hold a session whose client is gone, its slot and its queued
// bytes, until the pod read or wrote. A port whose pod has read nothing
// for StallTimeout is reset, as a SPDY stream is (resetStale), and the
// rest of b dropped: one stuck pod does not hold its session's other
// ports, nor the shared budget, for good.
func (s *chanSession) put(ctx context.Context, p *chanPort, b []byte) bool {
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		if _, err := p.in.PutFrom(r, r.Len(), stallCheck); !errors.Is(err, pipe.ErrStalled) {
			return true
		}
		if p.resetStale() {
			return true
		}
		if ctx.Err() != nil || connGone(s.ws.NetConn()) {
			s.log.Debug("connection gone while a port's queue was full", "port", p.port)
			return false
		}
	}
	return true
}

// waitBudget waits while the shared budget is spent, looking again every
// few milliseconds: reads on other sessions free it without telling this
// one. v4 has no flow control, so the client waits as it would for a pod
// that reads slowly; every StallTimeout of waiting the stale buffer
// holding the most of the budget, on any session or SPDY connection, is
// reset (Budget.Reclaim), so a pod that stopped reading, on a session
// whose client went quiet, does not hold the budget forever. False when
// the session ends meanwhile, or the connection is reset or times out
// (see put).
func (s *chanSession) waitBudget(ctx context.Context) bool {
	if !s.cfg.Global.Exhausted() {
		return true
	}
	s.limit(LimitGlobalBuffer)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	stall := time.NewTimer(s.cfg.StallTimeout)
	defer stall.Stop()
	look := time.Now().Add(stallCheck)
	for s.cfg.Global.Exhausted() {
		select {
		case <-tick.C:
		case <-stall.C:
			s.cfg.Global.Reclaim()
			stall.Reset(s.cfg.StallTimeout)
		case <-ctx.Done():
			return false
		}
		// Nothing is read meanwhile: look at the connection as put does.
		if now := time.Now(); now.After(look) {
			if connGone(s.ws.NetConn()) {
				return false
			}
			look = now.Add(stallCheck)
		}
	}
	return true
}

// limit tells OnLimit that limit was hit.
func (s *chanSession) limit(limit string) {
	if s.cfg.OnLimit != nil {
		s.cfg.OnLimit(limit)
	}
}

// FullestStale returns the bytes queued for the port, of those holding
// any, that holds the most while nothing has been put in or read from it
// for StallTimeout, and a function resetting it; 0 and nil when no port
// is stale. It makes the session a Budget Holder.
func (s *chanSession) FullestStale() (held int, reset func() bool) {
	var victim *chanPort
	for _, p := range s.ports {
		if !p.stale() {
			continue
		}
		if n := p.in.Buffered(); n > held {
			victim, held = p, n
		}
	}
	if victim == nil {
		return 0, nil
	}
	return held, victim.resetStale
}

// write sends one message on channel ch: the channel id, then the
// payload (in base64 mode an ASCII digit and base64 text).
func (s *chanSession) write(ch byte, payload []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.cfg.IdleTimeout > 0 {
		// A message either way keeps the connection alive, as the
		// kubelet's resetTimeout does on writes too: a download whose
		// client sends nothing is not idle.
		s.ws.SetWriteDeadline(s.writeDeadline())
		s.touch()
	}
	typ := websocket.BinaryMessage
	if s.cfg.Base64 {
		typ = websocket.TextMessage
		// The kubelet's string('0'+channel): UTF-8, as a text message
		// must be (two bytes from channel 80 on).
		s.scratch = utf8.AppendRune(s.scratch[:0], rune('0'+int(ch)))
		s.scratch = base64.StdEncoding.AppendEncode(s.scratch, payload)
	} else {
		s.scratch = append(append(s.scratch[:0], ch), payload...)
	}
	return s.ws.WriteMessage(typ, s.scratch)
}

// writeDeadline is the deadline of a write begun now: the idle timeout
// away, or none.
func (s *chanSession) writeDeadline() time.Time {
	if s.cfg.IdleTimeout > 0 {
		return time.Now().Add(s.cfg.IdleTimeout)
	}
	return time.Time{}
}

// chanPort is one port of a v4 WebSocket; it is the Stream its pump reads
// and writes.
type chanPort struct {
	s     *chanSession
	index int
	port  uint16
	in    *pipe.Pipe
	// ctx is the forward's: it ends with the session, or when the port
	// is reset for a stall (cancel, with a cause wrapping ErrReset).
	ctx    context.Context
	cancel context.CancelCauseFunc
	// lastUse is when bytes were last put in or read (time since
	// clockStart), for FullestStale.
	lastUse atomic.Int64
}

// clockStart is the origin of chanPort.lastUse's monotonic readings.
var clockStart = time.Now()

func (p *chanPort) touch() { p.lastUse.Store(int64(time.Since(clockStart))) }

// stale reports whether nothing has been put in the port or read from it
// for StallTimeout, and its pump's write to the pod, if one waits, has
// not progressed meanwhile either: a pod reading slowly leaves that write
// waiting on its full socket for longer than StallTimeout, and its port
// is in use all the same (see SetProgressProbe).
func (p *chanPort) stale() bool {
	if time.Since(clockStart)-time.Duration(p.lastUse.Load()) < p.s.cfg.StallTimeout {
		return false
	}
	if p.in.Progressed() {
		p.touch()
		return false
	}
	return true
}

// SetProgressProbe registers the pump's probe of its write to the pod
// (see pipe.SetProbe), which stale asks before it takes the port for
// one whose pod reads nothing. nil removes it.
func (p *chanPort) SetProgressProbe(probe func() bool) { p.in.SetProbe(probe) }

// resetStale resets the port, unless it has been used since it was found
// stale, and reports whether it did: its queued input leaves the budget, and its forward ends at once
// (the dial given up, or the pod connection closed), as a reset by the
// pod ends it; nothing is written on its error channel.
func (p *chanPort) resetStale() bool {
	if !p.stale() {
		return false
	}
	err := fmt.Errorf("port %d: client data unread for %v: %w", p.port, p.s.cfg.StallTimeout, ErrReset)
	// Only while bytes are queued, at once: another reader may be
	// resetting it too, or its forward ending (which drops them).
	n := p.in.AbortHeld(err)
	if n == 0 {
		return false
	}
	p.s.cfg.Global.Add(-int64(n))
	p.s.limit(LimitStreamBuffer)
	p.cancel(err)
	return true
}

var (
	_ Stream         = (*chanPort)(nil)
	_ ProgressProbed = (*chanPort)(nil)
)

func (p *chanPort) dataChannel() byte  { return byte(2 * p.index) }
func (p *chanPort) errorChannel() byte { return byte(2*p.index + 1) }

func (p *chanPort) forward(wg *sync.WaitGroup) {
	defer wg.Done()
	defer p.cancel(nil)
	p.s.obs.ForwardStarted()
	pod, err := p.s.cfg.Dial(p.ctx, p.port)
	if err != nil && p.ctx.Err() != nil {
		// The dial was given up: the port was reset for a stall, or the
		// session ended. No pod failed; nothing goes on the error
		// channel.
		res := causeResult(context.Cause(p.ctx))
		p.s.obs.ForwardEnded(res)
		p.s.log.Debug("dial given up", "port", p.port, "result", res, "err", context.Cause(p.ctx))
		p.abort(ErrReset)
		return
	}
	if err != nil {
		p.s.obs.ForwardEnded(ResultDialError)
		p.s.log.Info("dial failed", "port", p.port, "err", err)
		msg := fmt.Sprintf("error forwarding port %d to pod %s, uid %v: %v", p.port, p.s.cfg.Pod, p.s.cfg.UID, err)
		p.s.write(p.errorChannel(), []byte(msg))
		p.abort(ErrReset)
		return
	}
	res := Pump(p.ctx, p, pod, p.s.obs, 0)
	p.abort(ErrReset) // whatever the pod will never read leaves the budget
	p.s.log.Debug("forward done", "port", p.port, "result", res.Result, "up", res.Up, "down", res.Down, "err", res.Err)
	p.s.obs.ForwardEnded(res.Result)
}

func (p *chanPort) Read(b []byte) (int, error) { return p.in.Read(b) }

// Write sends b as data messages of at most maxMessage bytes each: a
// large read from the pod goes out as several, so one port's bulk
// transfer cannot hold the WebSocket against the other ports for long.
// Once the client has closed the WebSocket, b is dropped: no one reads it,
// and the port goes on passing the client's last bytes to the pod. Write
// then returns the bytes sent before, short of len(b), and no error: the
// pump counts only those and reads on.
func (p *chanPort) Write(b []byte) (int, error) {
	for off := 0; off < len(b); {
		n := min(len(b)-off, maxMessage)
		if err := p.s.write(p.dataChannel(), b[off:off+n]); err != nil {
			if p.s.clientClosed.Load() {
				return off, nil
			}
			return off, fmt.Errorf("write channel %d: %w: %w", p.dataChannel(), ErrConnClosed, err)
		}
		off += n
	}
	return len(b), nil
}

// CloseWrite ends the port: v4 cannot tell the client that the pod closed,
// so once it has, what the client still sends has nowhere to go.
func (p *chanPort) CloseWrite() error {
	p.in.Finish(io.EOF)
	return nil
}

// Reset drops the port's queued input; v4 has no reset on the wire.
func (p *chanPort) Reset() error {
	p.abort(ErrReset)
	return nil
}

// abort drops the port's queued input, and its bytes from the budget.
func (p *chanPort) abort(err error) {
	p.s.cfg.Global.Add(-int64(p.in.Abort(err)))
}

func (p *chanPort) Headers() http.Header { return nil }
func (p *chanPort) ID() uint32           { return uint32(p.dataChannel()) }
