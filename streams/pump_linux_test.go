package streams

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPumpAbortWithBytesThePodHasNotTakenResetsPod: a forward that aborts
// (its session ends, its client resets it) while bytes for the pod wait in the daemon's
// socket resets the pod's connection. Closed, the socket stayed in the
// kernel with up to its send buffer (4 MiB) queued until the pod read it,
// for as long as the pod did not: clients aborting uploads to pods that
// read nothing took the node's TCP memory to its limit, stalling every
// connection on it. The pod sees a reset, not an orderly end it would
// take for a complete upload.
func TestPumpAbortWithBytesThePodHasNotTakenResetsPod(t *testing.T) {
	podSides := make(chan *net.TCPConn, 1)
	ctx, abort := context.WithCancel(context.Background())
	defer abort()
	r := newForwardRig(t, func(serverSide, podSide *net.TCPConn) PumpResult {
		podSides <- podSide
		return Pump(ctx, tcpStream{serverSide}, podSide, NopObserver{}, 0)
	})
	podSide := <-podSides
	go r.client.Write(make([]byte, 32<<20)) // far more than the sockets hold; the pod reads nothing
	rc, err := podSide.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "bytes queued in the daemon's socket to the pod", func() bool {
		queued := 0
		rc.Control(func(fd uintptr) { queued, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		return queued > 0
	})
	abort() // the session ends, or the client resets the stream
	if res := r.result(t); res.Result != ResultAborted {
		t.Fatalf("pump: got %+v, want aborted", res)
	}
	if _, err := readAllTimeout(t, r.pod); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("pod after the abort: %v; want a reset", err)
	}
}
