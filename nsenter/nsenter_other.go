//go:build !linux

package nsenter

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"time"
)

// DefaultDialTimeout bounds each connect attempt.
const DefaultDialTimeout = 10 * time.Second

var errUnsupported = errors.New("network namespaces are only supported on Linux")

// Dialer connects to a port on a pod's loopback; Linux only.
type Dialer struct {
	Timeout time.Duration
}

// Dial always fails outside Linux.
func (Dialer) Dial(context.Context, Target, uint16) (*net.TCPConn, error) {
	return nil, errUnsupported
}

// Prepare always fails outside Linux.
func Prepare() error { return errUnsupported }

// Identify always fails outside Linux.
func Identify(string) (Target, error) { return Target{}, errUnsupported }

// CheckTarget always fails outside Linux.
func CheckTarget(Target) error { return errUnsupported }

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
