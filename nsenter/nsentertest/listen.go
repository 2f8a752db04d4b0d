// Package nsentertest helps tests and tools put servers inside network
// namespaces, the way a pod's process listens inside its own.
package nsentertest

import (
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// Listen opens a listener inside the network namespace at path. The socket
// is created on a locked thread switched into the namespace, which then
// switches back; the listener may be used from any goroutine. If the thread
// cannot switch back, Listen panics rather than leave a thread in the wrong
// namespace.
func Listen(path, network, addr string) (net.Listener, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, fmt.Errorf("enter netns %s: %w", path, err)
	}
	ln, lerr := net.Listen(network, addr)
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("nsentertest: cannot leave netns %s: %v", path, err))
	}
	if lerr != nil {
		return nil, fmt.Errorf("listen %s %s in netns %s: %w", network, addr, path, lerr)
	}
	return ln, nil
}
