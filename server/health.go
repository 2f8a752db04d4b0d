package server

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"
)

// MetricsHandler serves /metrics, /healthz and /readyz for the metrics
// listener, and /debug/pprof/ when Config.Pprof is set.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready\n"))
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

// NewMetricsHTTPServer returns the http.Server for the metrics listener.
// It authenticates nobody, so it holds no connection for as long as a
// client likes: headers are bounded by ReadHeaderTimeout, a keep-alive
// connection by IdleConnTimeout, as is an answer its client does not
// read (but pprof's, whose profiles take as long as asked), and a body a
// request declares is never waited for (none of its handlers reads one).
func (s *Server) NewMetricsHTTPServer() *http.Server {
	h := s.MetricsHandler()
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			skipBody(w, r)
			if !strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
				http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.idleConnTimeout()))
			}
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: s.readHeaderTimeout(),
		IdleTimeout:       s.idleConnTimeout(),
		MaxHeaderBytes:    64 << 10,
		// As the forwarding server's: net/http's own lines (an accept
		// retry, every 5 ms to 1 s while out of file descriptors) go
		// through the daemon's log at debug, not to stderr past it.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// MetricsListener wraps ln for the metrics listener: the log says, once
// per episode, when it cannot accept for want of file descriptors or
// memory (scrapes and probes then wait with no answer), and when it
// accepts again.
func (s *Server) MetricsListener(ln net.Listener) net.Listener {
	return WarnAcceptShortage(ln, s.log, "--metrics-listen")
}
