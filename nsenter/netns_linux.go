package nsenter

import (
	"errors"
	"fmt"
	"io/fs"
	"unsafe"

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

// Identify checks that path is a network namespace file and returns a
// Target bound to the namespace it names now. A missing file gives an
// error for which errors.Is(err, fs.ErrNotExist) holds.
func Identify(path string) (Target, error) {
	h, err := openNetns(path)
	if err != nil {
		return Target{}, err
	}
	defer h.Close()
	id, err := netnsID(int(h))
	if err != nil {
		return Target{}, fmt.Errorf("netns %s: %w", path, err)
	}
	return Target{Path: path, ID: id}, nil
}

// CheckTarget reports whether t's path still names t's namespace: an
// error as Dial's when it does not.
func CheckTarget(t Target) error {
	h, err := openTarget(t)
	if err != nil {
		return err
	}
	return h.Close()
}

// openTarget opens t's path as openNetns does and, if t has an ID, checks
// that the namespace there is still t's: one created again at the path
// wraps ErrNetnsGone, as t's own namespace is.
func openTarget(t Target) (netns.NsHandle, error) {
	h, err := openNetns(t.Path)
	if err != nil || t.ID == (NetnsID{}) {
		return h, err
	}
	id, err := netnsID(int(h))
	if err != nil {
		h.Close()
		return netns.None(), fmt.Errorf("netns %s: %w", t.Path, err)
	}
	if !id.same(t.ID) {
		h.Close()
		return netns.None(), fmt.Errorf("netns %s: %w: the file holds another namespace than when the pod was looked up (inode %d, was %d)", t.Path, ErrNetnsGone, id.Inode, t.ID.Inode)
	}
	return h, nil
}

// nsGetID is NS_GET_ID, _IOR(NSIO, 13, __u64) (linux/nsfs.h, Linux 6.18):
// a namespace's 64-bit ID, never reused. x/sys/unix has no name for it yet.
const nsGetID = 0x8008b70d

// netnsID identifies the namespace of fd: its inode number, and its
// namespace ID where the kernel has NS_GET_ID (older ones answer ENOTTY).
func netnsID(fd int) (NetnsID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return NetnsID{}, fmt.Errorf("stat: %w", err)
	}
	id := NetnsID{Inode: st.Ino}
	var k uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), nsGetID, uintptr(unsafe.Pointer(&k))); errno == 0 {
		id.Kernel = k
	}
	return id, nil
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
