package nsenter

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// openNetns opens path and checks, on the open descriptor (so there is no
// window between check and use), that it is an nsfs file holding a network
// namespace. Missing files wrap ErrNetnsGone; anything else that is not a
// network namespace wraps ErrNotNetns.
func openNetns(path string) (netns.NsHandle, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return netns.None(), fmt.Errorf("open netns %s: %w: %w", path, ErrNetnsGone, fs.ErrNotExist)
		}
		return netns.None(), fmt.Errorf("open netns %s: %w", path, err)
	}
	h := netns.NsHandle(fd)
	if err := checkNetnsFD(fd); err != nil {
		h.Close()
		return netns.None(), fmt.Errorf("netns %s: %w", path, err)
	}
	return h, nil
}

func checkNetnsFD(fd int) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("%w: filesystem type %#x, not nsfs", ErrNotNetns, st.Type)
	}
	typ, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("NS_GET_NSTYPE: %w", err)
	}
	if typ != unix.CLONE_NEWNET {
		return fmt.Errorf("%w: namespace type %#x", ErrNotNetns, typ)
	}
	return nil
}

// CheckNetns reports whether path is a network namespace file. A missing
// file gives an error for which errors.Is(err, fs.ErrNotExist) holds.
func CheckNetns(path string) error {
	h, err := openNetns(path)
	if err != nil {
		return err
	}
	return h.Close()
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
