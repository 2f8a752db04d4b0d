package server

import (
	"errors"
	"net/http"
	"strings"

	"github.com/portforwardd/portforwardd/nsenter"
)

// HeaderTransports names, in an answer to OPTIONS on a /portForward route,
// the transports this server offers, best first. Clients that find it
// (portforward --transport auto) pick the first they support; a kubelet or
// API server answers OPTIONS without it, and clients then take the
// Kubernetes path.
const HeaderTransports = "Portforwardd-Transports"

// Transport names in HeaderTransports.
const (
	TransportConnectTCP = UpgradeConnectTCP // one upgrade per connection, spliced
	TransportH2         = "h2"              // one HTTP/2 stream per connection
	TransportTunnel     = "websocket-spdy"  // SPDY/3.1+portforward.k8s.io over WebSocket
	TransportSPDY       = "spdy"            // SPDY/3.1 portforward.k8s.io
	TransportV4         = "websocket-v4"    // v4(.base64).channel.k8s.io
)

var offeredTransports = strings.Join([]string{TransportConnectTCP, TransportH2, TransportTunnel, TransportSPDY, TransportV4}, ", ")

// answerOptions tells an authenticated client whether the pod exists here
// and which transports it may use, without dialing or upgrading anything.
func (s *Server) answerOptions(w http.ResponseWriter, r *http.Request, pod nsenter.Pod) {
	_, err := s.cfg.Resolver.Resolve(r.Context(), pod)
	switch {
	case errors.Is(err, nsenter.ErrPodNotFound):
		s.fail(w, r, &requestError{status: http.StatusNotFound, reason: "not_found", msg: "pod does not exist"})
		return
	case err != nil:
		s.fail(w, r, resolveError(pod, err))
		return
	}
	skipBody(w, r)
	w.Header().Set("Allow", strings.Join(allowedMethods(r, false), ", "))
	w.Header().Set(HeaderTransports, offeredTransports)
	w.WriteHeader(http.StatusNoContent)
}
