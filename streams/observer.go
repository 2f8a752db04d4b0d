package streams

// Direction names one way of a forwarded connection.
type Direction int

const (
	// ClientToPod is data read from the client stream and written to the pod.
	ClientToPod Direction = iota
	// PodToClient is data read from the pod and written to the client stream.
	PodToClient
)

func (d Direction) String() string {
	if d == ClientToPod {
		return "client_to_pod"
	}
	return "pod_to_client"
}

// Results of a forwarded connection, as reported to Observer.ForwardEnded
// and StreamRejected. The set is fixed so that it can label metrics.
const (
	ResultOK        = "ok"         // both directions ended with EOF
	ResultReset     = "reset"      // the client or the pod reset it (the client: during the dial too)
	ResultDialError = "dial_error" // the pod could not be dialed
	ResultAborted   = "aborted"    // its connection or session ended while it ran or dialed
	ResultTimeout   = "timeout"    // its pair never completed
	ResultRejected  = "rejected"   // bad headers, duplicate, limit, draining, session ended first
)

// Observer is told what sessions do; the server implements it with
// Prometheus metrics. Methods are called concurrently and must not block.
type Observer interface {
	// ForwardStarted is called when a forwarded connection is set up (a
	// pair completed), before the pod is dialed.
	ForwardStarted()
	// ForwardEnded is called once for each ForwardStarted.
	ForwardEnded(result string)
	// StreamRejected counts a stream or pair that never became a
	// forwarded connection (ResultRejected or ResultTimeout).
	StreamRejected(result string)
	// Transferred counts n bytes moved in direction d.
	Transferred(d Direction, n int)
}

// NopObserver ignores everything.
type NopObserver struct{}

func (NopObserver) ForwardStarted()            {}
func (NopObserver) ForwardEnded(string)        {}
func (NopObserver) StreamRejected(string)      {}
func (NopObserver) Transferred(Direction, int) {}

var _ Observer = NopObserver{}
