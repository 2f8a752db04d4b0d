// Package streams runs port-forward sessions over upgraded connections and
// copies bytes between client streams and pod connections.
//
// A transport engine (SPDY, see ServeSPDY) turns an upgraded net.Conn
// into a Conn that announces each new client stream to an AcceptFunc. A
// Session is the port-forward logic on top: it validates stream headers,
// pairs the data and error streams of one forwarded connection by requestID
// (with the kubelet's legacy stream-ID fallback and a creation timeout),
// dials the pod through Config.Dial, and runs Pump until both directions are
// done. WebSocketNetConn carries the same SPDY over a WebSocket's binary
// messages (the tunnel of kubectl ≥ 1.31).
//
// ServeChannels is the WebSocket v4 channel protocol, which has no streams
// to pair: the ports are named up front, each dialed at once and pumped
// over its own data and error channels, until every port has ended.
//
// Who closes what:
//   - Pump owns the pod connection it is given and closes it before it
//     returns. It half-closes the client stream (CloseWrite) on pod EOF and
//     the pod connection on client EOF, and resets the client stream when
//     either side aborts.
//   - A Session owns every stream it accepted: each ends with a FIN from
//     both sides or a reset, and Run resets whatever is left when the
//     connection ends, so no stream or goroutine outlives Run.
//   - Run closes the Conn before it returns; ServeChannels closes its
//     WebSocket before it returns.
//   - Splice is Pump for a client that is a plain TCP connection (the raw
//     transport): the kernel moves the bytes with splice(2). Both look at
//     their TCP sockets every second (Watch): a peer reset while nothing
//     reads it aborts the forward, and an idle timeout, when given, ends
//     one that moved no byte either way for that long.
//
// Error-stream policy (PROTOCOL.md, "Forwarding"): a failed dial is written as the
// kubelet's text "error forwarding port %d to pod %s, uid %v: %v" on the
// error stream, then both streams are reset; clients treat that as fatal
// for the session. A peer reset or broken pipe after the connection was set
// up resets the data stream and writes nothing, so kubectl ≥ 1.23 keeps its
// session for the other connections. A v4 port's failed dial is written
// the same way on its error channel, and the other ports go on.
//
// Nothing here knows about network namespaces or HTTP routing; the pump
// sees two byte streams.
package streams
