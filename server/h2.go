package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/portforwardd/portforwardd/nsenter"
	"github.com/portforwardd/portforwardd/streams"
)

const protocolH2 = "h2"

// h2Config tunes HTTP/2 for port-forward streams: large frames. The
// server sets the concurrent streams and the windows from its Limits
// (by default 8 MiB per stream, enough for a loopback bulk stream, and
// 64 MiB per connection).
var h2Config = &http.HTTP2Config{
	MaxReadFrameSize: 1 << 20,
}

// serveH2 forwards one HTTP/2 stream: the pod is dialed before the
// response headers, so a failure is a status with the kubelet's text; then
// the request body carries client→pod and the response body pod→client.
func (s *Server) serveH2(w http.ResponseWriter, r *http.Request, pod nsenter.Pod, target nsenter.Target, port uint16) {
	obs := s.m.observer(protocolH2)
	pc, ok := s.dialFirst(r.Context(), w, r, pod, target, port, obs)
	if !ok {
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		pc.Close()
		s.goneBeforeAnswer(obs, r, pod, port, err)
		return
	}
	st := &h2Stream{body: r.Body, w: w, rc: rc}
	log := s.sessionLog(r, pod, protocolH2, port)
	s.runSession(func() {}, protocolH2, log, func(ctx context.Context) {
		// The stream ends with the request (a client reset, counted as
		// one: Go's server cancels the request's context before the body
		// reports the reset) or with the server (the drain's deadline),
		// whichever comes first.
		pctx, cancel := context.WithCancelCause(context.WithoutCancel(r.Context()))
		defer cancel(nil)
		defer context.AfterFunc(r.Context(), func() {
			cancel(fmt.Errorf("h2 stream: %w: %w", streams.ErrReset, context.Cause(r.Context())))
		})()
		defer context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })()
		obs.ForwardStarted()
		res := streams.Pump(pctx, st, s.h2StallWatch(r, pc, log), obs, s.cfg.StreamIdleTimeout)
		logForwardDone(log, res)
		obs.ForwardEnded(res.Result)
		if res.Result != streams.ResultOK && !st.responseDone.Load() {
			// RST_STREAM to the client: the pod reset, or the stream was
			// cut (the drain's deadline). Ending the response would read
			// as a finished transfer.
			panic(http.ErrAbortHandler)
		}
	})
}

// h2Stream is an HTTP/2 stream as the pump sees it. The response ends when
// the handler returns, and Go's server cannot keep reading the request body
// after that (it resets the request side with NO_ERROR), so the pod's EOF
// ends the whole stream: CloseWrite stops the client→pod direction too.
type h2Stream struct {
	body         io.ReadCloser
	w            http.ResponseWriter
	rc           *http.ResponseController
	responseDone atomic.Bool
}

func (s *h2Stream) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		if s.responseDone.Load() {
			return n, io.EOF // we closed it: the stream is over, not reset
		}
		return n, fmt.Errorf("h2 request body: %w: %w", streams.ErrReset, err)
	}
	return n, err
}

// h2HandlerBuffer is the size of the buffer Go's HTTP/2 server puts in
// front of a handler's writes (a bufio.Writer): a larger write goes
// straight to the connection's writer (which flushes when it has nothing
// more queued); one that fits, a full 4 KiB included, waits in it until a
// Flush.
const h2HandlerBuffer = 4 << 10

func (s *h2Stream) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err == nil && len(p) <= h2HandlerBuffer {
		err = s.rc.Flush()
	}
	if err != nil {
		return n, fmt.Errorf("h2 response body: %w: %w", streams.ErrReset, err)
	}
	return n, nil
}

func (s *h2Stream) CloseWrite() error {
	s.responseDone.Store(true)
	return s.body.Close() // unblocks the client→pod direction
}

// Reset stops both directions: the request body is closed (a read waiting
// for the client returns), and unless the response has ended, the stream
// is reset at once with a write deadline in the past. A write waiting for
// the client's window (a client that uploads and does not read yet) would
// otherwise keep the pump, and the stream, until the client reads, while
// Go's server drops the client's further DATA without returning its
// window, so an uploading client stalls and never learns of the reset.
func (s *h2Stream) Reset() error {
	if !s.responseDone.Load() {
		s.rc.SetWriteDeadline(time.Unix(1, 0))
	}
	return s.body.Close()
}

func (s *h2Stream) Headers() http.Header { return nil }
func (s *h2Stream) ID() uint32           { return 0 }
