package streams

import (
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// A write to the pod that has not returned can still be making progress:
// the kernel wakes a writer waiting on a full socket only once a third of
// its send buffer (up to about 1.3 MiB on loopback) is free, which a pod
// reading 40 KiB/s takes over 30 s to free. The stall checks of a
// stream's buffer count only reads, and a read of the buffer is over only
// once such a write returns, so they would take a pod that reads slowly
// for one that reads nothing. ackProbe lets them look at the bytes the
// pod's TCP acknowledged (TCP_INFO bytes_acked), which grow as soon as the
// pod reads and opens its window, as the HTTP/2 path's h2Stalls does.

// ProgressProbed is a stream whose buffer's stall checks can ask the pump
// whether its write to the pod is progressing (the SPDY engine's streams,
// the v4 WebSocket ports). The pump registers probe for the length of the
// forward, and nil after.
type ProgressProbed interface {
	SetProgressProbe(probe func() bool)
}

// ackBaseAfter is how long a write to the pod waits before ackProbe
// takes the bytes acknowledged so far as the base its probe compares
// with: a write that returns sooner costs no system call.
const ackBaseAfter = time.Second

// ackProbe is the pod's connection as the client→pod direction writes to
// it: it knows whether a write is under way, and has the bytes the pod's
// TCP had acknowledged shortly after it began.
type ackProbe struct {
	w    io.Writer
	rc   syscall.RawConn
	base *time.Timer // takes the base once a write has waited ackBaseAfter

	mu      sync.Mutex
	writing bool   // a Write is under way
	based   bool   // acked was taken during this Write
	acked   uint64 // bytes_acked when last looked at, during this Write
}

// newAckProbe returns the probe of writes to w, whose TCP connection is
// tc, or nil when tc cannot be looked at.
func newAckProbe(w io.Writer, tc *net.TCPConn) *ackProbe {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	a := &ackProbe{w: w, rc: rc}
	a.base = time.AfterFunc(time.Hour, a.takeBase)
	a.base.Stop()
	return a
}

func (a *ackProbe) Write(b []byte) (int, error) {
	a.mu.Lock()
	a.writing, a.based = true, false
	a.mu.Unlock()
	a.base.Reset(ackBaseAfter)
	n, err := a.w.Write(b)
	a.base.Stop()
	a.mu.Lock()
	a.writing = false
	a.mu.Unlock()
	return n, err
}

// takeBase records the bytes acknowledged so far, as the base of the
// write under way, unless it has one.
func (a *ackProbe) takeBase() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.writing || a.based {
		return
	}
	if acked, ok := a.ackedBytes(); ok {
		a.acked, a.based = acked, true
	}
}

// progressed reports whether the pod's TCP acknowledged more bytes since
// the base of the write under way, or since progressed last looked during
// it: the pod read, and the write is progressing though it has not
// returned. False when no write is under way (its return, a read of the
// stream's buffer, counts by itself), or it began too recently to have a
// base (its beginning followed such a read).
func (a *ackProbe) progressed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.writing {
		return false
	}
	acked, ok := a.ackedBytes()
	if !ok {
		return false
	}
	grew := a.based && acked != a.acked
	a.acked, a.based = acked, true
	return grew
}

// ackedBytes returns the bytes the pod's TCP has had acknowledged.
func (a *ackProbe) ackedBytes() (uint64, bool) { return rawAckedBytes(a.rc) }
