package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/portforwardd/portforwardd/nsenter"
	"github.com/portforwardd/portforwardd/streams"
)

// serveSPDY answers a SPDY upgrade with its 101 and serves the session on
// the hijacked connection.
func (s *Server) serveSPDY(w http.ResponseWriter, r *http.Request, pod nsenter.Pod, target nsenter.Target, protocol string) {
	w.Header().Set("Connection", "Upgrade")
	w.Header().Set("Upgrade", upgradeSPDY31)
	w.Header().Set(headerProtocolVersion, protocol)
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(s.answerTimeout())) // for the 101, written by Hijack
	w.WriteHeader(http.StatusSwitchingProtocols)
	raw, bufrw, err := rc.Hijack()
	if err != nil {
		s.m.upgradeFailures.WithLabelValues("hijack").Inc()
		s.log.Warn("hijack", "remote", r.RemoteAddr, "err", err)
		return
	}
	raw = unwrapConn(raw)
	raw.SetDeadline(time.Time{}) // no inherited server deadline; the idle timeout governs
	var buffered io.Reader
	if bufrw.Reader.Buffered() > 0 {
		buffered = bufrw.Reader // bytes the client sent right after its request
	}
	s.runSPDY(raw, buffered, protocolSPDY, pod, target, s.requestLog(r, pod, protocolSPDY))
}

// runSPDY serves a port-forward SPDY session on conn, an upgraded HTTP
// connection or a WebSocket tunnel; log is requestLog's.
func (s *Server) runSPDY(conn net.Conn, buffered io.Reader, protocol string, pod nsenter.Pod, target nsenter.Target, log *slog.Logger) {
	sess := streams.NewSession(streams.Config{
		Pod:             pod.String(),
		UID:             pod.UID,
		Dial:            s.dialFunc(target),
		CreationTimeout: s.cfg.StreamCreationTimeout,
		MaxPendingPairs: s.cfg.Limits.MaxPendingStreams,
		OnLimit:         s.limitHit,
		Observer:        s.m.observer(protocol),
		Log:             log, // its lines add "session"
	})
	l := s.cfg.Limits
	sc := streams.ServeSPDY(conn, sess.Accept, streams.SPDYOptions{
		IdleTimeout:  s.cfg.StreamIdleTimeout,
		StreamBuffer: l.StreamBufferBytes,
		ConnBuffer:   l.SessionBufferBytes,
		MaxStreams:   l.MaxStreamsPerSession,
		Global:       s.budget,
		OnLimit:      s.limitHit,
		OnRefuse:     sess.Refused,
		Reader:       buffered,
	})
	s.runSession(sess.Drain, protocol, log.With("session", sess.ID()), func(ctx context.Context) { sess.Run(ctx, sc) })
}
