// Package spdy is a server-side SPDY/3 engine for port-forward: it reads
// the frames a client sends on an upgraded connection, announces each new
// stream to an accept function, and carries stream data both ways.
//
// What it guarantees:
//   - Bounded parsing. Control frames larger than MaxControlFrame, header
//     blocks that inflate past MaxHeaderBlock, more than MaxHeaders headers
//     or header fields over MaxHeaderField, and SETTINGS with more entries
//     than their length allows are refused: a stream-level violation resets
//     that stream (RST_STREAM), a connection-level one ends the connection
//     with GOAWAY. No allocation is ever sized by the peer.
//   - The frame reader never waits on a stream's consumer while that
//     stream is within its buffer budget (Options.StreamBuffer). A peer
//     that ignores flow control (moby/spdystream, which every Kubernetes
//     client uses, never honours WINDOW_UPDATE) and overruns the budget
//     makes the reader wait for that consumer; if the consumer reads
//     nothing for Options.StallTimeout, and its progress probe
//     (Stream.SetProgressProbe: the pod's TCP acknowledging bytes of a
//     write that has not returned) saw none, the stream is reset with
//     FLOW_CONTROL_ERROR so the other streams go on; a reader waiting
//     for a shared Budget with nothing of its own to reset resets the
//     fullest stale buffer of any Holder sharing it (another
//     connection's stream, a v4 WebSocket's port). Peers that honour
//     flow control never overrun: the engine advertises the budget as the
//     initial window and sends WINDOW_UPDATEs as data is consumed.
//   - The writer batches queued frames into one writev, takes at most
//     Options.MaxFrame bytes from each stream in turn, and writes payload
//     straight from the caller's slice: no copy in user space. A
//     connection without writev (TLS, the WebSocket tunnel) gets the batch
//     copied into one pooled buffer and written at once. On a plain
//     TCP connection, Stream.SpliceChunkFrom moves a socket's bytes to the
//     client with splice(2), never through user space while the writer is
//     idle.
//   - On a plain TCP connection the other way is spliced too: while a
//     stream's consumer waits on an empty buffer with
//     Stream.WriteChunkToSocket, the reader writes the stream's DATA to
//     the consumer's socket (the pod's) itself, splicing the payload out
//     of the client's socket, and never waits on it: once that socket
//     cannot take a write whole, the bytes go into the stream's buffer as
//     they would have, and the buffer drains before the reader writes
//     directly again, so the pod gets them in order.
//   - Every stream gets its SYN_REPLY before anything else is sent on it.
//   - Pings from the client are answered; Close sends GOAWAY; a connection
//     with no frame either way for Options.IdleTimeout is closed.
//
// The engine does not respect the peer's windows when sending: Kubernetes
// peers never send WINDOW_UPDATE, and a sender that waited for one would
// stall after 64 KiB (see PROTOCOL.md in the parent directory, which also gives the limits).
package spdy
