package streams

import (
	"fmt"
	"net/http"
	"strconv"
)

// Stream header names and values of the portforward.k8s.io protocol
// (k8s.io/api/core/v1 PortHeader, StreamType, PortForwardRequestIDHeader).
const (
	HeaderStreamType = "streamType"
	HeaderPort       = "port"
	HeaderRequestID  = "requestID"

	StreamTypeData  = "data"
	StreamTypeError = "error"
)

// maxRequestIDLen bounds what a pair key may cost; client-go sends a
// decimal counter.
const maxRequestIDLen = 256

// streamInfo is what the headers of one port-forward stream say.
type streamInfo struct {
	isError   bool
	port      uint16
	requestID string
}

// parseStreamHeaders validates a stream's headers exactly as the kubelet's
// httpStreamReceived does (port first, then streamType, with its messages)
// and derives the requestID, falling back for clients that send none: the
// error stream's own ID, or the data stream's ID minus 2, which pairs the
// consecutive streams such clients open.
func parseStreamHeaders(h http.Header, id uint32) (streamInfo, error) {
	var info streamInfo
	portString := h.Get(HeaderPort)
	if portString == "" {
		return info, fmt.Errorf("%q header is required", HeaderPort)
	}
	port, err := strconv.ParseUint(portString, 10, 16)
	if err != nil {
		return info, fmt.Errorf("unable to parse %q as a port: %v", portString, err)
	}
	if port < 1 {
		return info, fmt.Errorf("port %q must be > 0", portString)
	}
	info.port = uint16(port)

	switch st := h.Get(HeaderStreamType); st {
	case StreamTypeError:
		info.isError = true
	case StreamTypeData:
	case "":
		return info, fmt.Errorf("%q header is required", HeaderStreamType)
	default:
		return info, fmt.Errorf("invalid stream type %q", st)
	}

	info.requestID = h.Get(HeaderRequestID)
	switch {
	case len(info.requestID) > maxRequestIDLen:
		return info, fmt.Errorf("%q header is longer than %d bytes", HeaderRequestID, maxRequestIDLen)
	case info.requestID != "":
	case info.isError:
		info.requestID = strconv.FormatInt(int64(id), 10)
	default:
		info.requestID = strconv.FormatInt(int64(id)-2, 10)
	}
	return info, nil
}
