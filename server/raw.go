package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/portforwardd/portforwardd/nsenter"
	"github.com/portforwardd/portforwardd/streams"
)

// UpgradeConnectTCP is the upgrade token of the raw transport, after the
// IETF's connect-tcp draft (draft-ietf-httpbis-connect-tcp): after the 101
// the connection carries the forwarded TCP connection's bytes with no
// framing at all.
const UpgradeConnectTCP = "connect-tcp"

const protocolRaw = "raw"

// isConnectTCP reports whether r asks for the raw transport.
func isConnectTCP(h http.Header) bool {
	if !headerContains(h, "Connection", "upgrade") {
		return false
	}
	for _, v := range h.Values("Upgrade") {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), UpgradeConnectTCP) {
				return true
			}
		}
	}
	return false
}

// serveRaw dials the pod before answering, so a failure is an HTTP status
// with the kubelet's text; then it answers 101 and splices the client's
// socket to the pod's.
func (s *Server) serveRaw(w http.ResponseWriter, r *http.Request, pod nsenter.Pod, target nsenter.Target, port uint16) {
	obs := s.m.observer(protocolRaw)
	// Not the request's context: net/http cancels it when its background
	// read sees the client's EOF, and a client may send its bytes and its
	// FIN with the request; they are the pod's, the dial has its own
	// timeout. It ends with the server, though: the drain's deadline (or
	// a second signal) gives up a dial as it ends every forward, where the
	// daemon waited for the dial's timeout.
	dialCtx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	pc, ok := s.dialFirst(dialCtx, w, r, pod, target, port, obs)
	if !ok {
		return
	}
	podConn := pc.(*net.TCPConn)
	// Take the connection before answering: once the client has the 101 it
	// sends, and net/http's background read could keep its first byte,
	// which would then reach the pod in a write of its own.
	raw, bufrw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		podConn.Close()
		s.m.upgradeFailures.WithLabelValues("hijack").Inc()
		s.log.Warn("hijack", "remote", r.RemoteAddr, "err", err)
		return
	}
	raw = unwrapConn(raw)
	raw.SetReadDeadline(time.Time{})
	raw.SetWriteDeadline(time.Now().Add(s.answerTimeout()))
	if _, err := io.WriteString(raw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+UpgradeConnectTCP+"\r\n\r\n"); err != nil {
		raw.Close()
		podConn.Close()
		s.goneBeforeAnswer(obs, r, pod, port, err)
		return
	}
	raw.SetWriteDeadline(time.Time{})
	// Bytes the client pipelined behind its request go first.
	obs.ForwardStarted()
	if n := bufrw.Reader.Buffered(); n > 0 {
		k, err := io.CopyN(podConn, bufrw.Reader, int64(n))
		obs.Transferred(streams.ClientToPod, int(k))
		if err != nil {
			raw.Close()
			podConn.Close()
			obs.ForwardEnded(streams.ResultReset)
			return
		}
	}
	log := s.sessionLog(r, pod, protocolRaw, port)
	s.runSession(func() {}, protocolRaw, log, func(ctx context.Context) {
		defer raw.Close()
		var res streams.PumpResult
		if tcp, ok := raw.(*net.TCPConn); ok {
			res = streams.Splice(ctx, tcp, podConn, obs, s.cfg.StreamIdleTimeout)
		} else {
			res = streams.Pump(ctx, connStream{raw}, podConn, obs, s.cfg.StreamIdleTimeout)
		}
		logForwardDone(log, res)
		obs.ForwardEnded(res.Result)
	})
}

// goneBeforeAnswer counts a forward whose client went away between the
// pod's dial and the answer (the 101, an HTTP/2 stream's headers): the pod
// was connected to, so it is a forwarded connection, reset by the client
// as one reset during the dial is, and logged at debug as that is.
func (s *Server) goneBeforeAnswer(obs *observer, r *http.Request, pod nsenter.Pod, port uint16, err error) {
	obs.ForwardStarted()
	obs.ForwardEnded(streams.ResultReset)
	s.log.Debug("client gone before the answer", "pod", pod.String(), "port", port, "remote", r.RemoteAddr, "err", err)
}

// logForwardDone logs the end of a forward that is a whole session (raw,
// HTTP/2): at debug, but at info when the idle timeout cut it, which is
// otherwise told by nothing but the session's end.
func logForwardDone(log *slog.Logger, res streams.PumpResult) {
	level := slog.LevelDebug
	if errors.Is(res.Err, streams.ErrIdle) {
		level = slog.LevelInfo
	}
	log.Log(context.Background(), level, "forward done", "result", res.Result, "up", res.Up, "down", res.Down, "err", res.Err)
}

// connStream is a Stream over a plain connection (a TLS one, where splice
// cannot help): EOF is the peer's FIN; CloseWrite needs the connection to
// support it.
type connStream struct{ net.Conn }

func (c connStream) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Reset closes the connection so the client sees a reset, not an end:
// SO_LINGER 0, and over TLS without close_notify, which would read as a
// clean end of the stream.
func (c connStream) Reset() error {
	nc := c.Conn
	if tc, ok := nc.(*tls.Conn); ok {
		nc = unwrapConn(tc.NetConn())
	}
	if tcp, ok := nc.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	return nc.Close()
}

// PodResetting: a raw forward passes a reset on as a reset, both ways.
func (connStream) PodResetting() {}

func (c connStream) Headers() http.Header { return nil }
func (c connStream) ID() uint32           { return 0 }

// dialFirst dials the pod before a transport answers, as the raw and HTTP/2
// transports do; a failure is answered here, as a 502 carrying the
// kubelet's text, and counted as a dial error. A dial that ctx ended (the
// client reset its HTTP/2 stream, or its connection closed) failed no pod:
// it is counted as a reset, as on SPDY, and logged at debug, with nothing
// answered to a client that is gone. One that the server's end gave up
// (the drain's deadline) is aborted, and answered 503.
func (s *Server) dialFirst(ctx context.Context, w http.ResponseWriter, r *http.Request, pod nsenter.Pod, target nsenter.Target, port uint16, obs *observer) (streams.PodConn, bool) {
	pc, err := s.dialFunc(target)(ctx, port)
	if err != nil && s.ctx.Err() != nil {
		// The server's end (the drain's deadline) gave the dial up: the
		// client may still be there, and an empty answer would read as
		// net/http's 200.
		obs.ForwardStarted()
		obs.ForwardEnded(streams.ResultAborted)
		s.fail(w, r, &requestError{status: http.StatusServiceUnavailable, reason: "shutting_down", msg: "server is shutting down"})
		return nil, false
	}
	if err != nil && ctx.Err() != nil {
		obs.ForwardStarted()
		obs.ForwardEnded(streams.ResultReset)
		s.log.Debug("dial given up", "pod", pod.String(), "port", port, "remote", r.RemoteAddr, "err", context.Cause(ctx))
		return nil, false
	}
	if err != nil {
		obs.ForwardStarted()
		obs.ForwardEnded(streams.ResultDialError)
		s.fail(w, r, &requestError{status: http.StatusBadGateway, reason: "dial",
			msg: fmt.Sprintf("error forwarding port %d to pod %s, uid %v: %v", port, pod, pod.UID, err)})
		return nil, false
	}
	return pc, true
}

// NetConn returns the client's connection, so the pump can look whether
// it was reset while nothing reads or writes it.
func (c connStream) NetConn() net.Conn { return c.Conn }
