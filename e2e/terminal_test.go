package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openPTY returns a pseudo-terminal's master and slave.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no /dev/ptmx: %v", err)
	}
	var unlock int32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, m.Fd(), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// TestCLIInATerminal runs portforward as a person would, on a terminal:
// it reads the screen, uses the forwarded port, and presses Ctrl-C.
func TestCLIInATerminal(t *testing.T) {
	d := startDaemon(t)
	p := newPod(t)
	ln := p.listen(t, "tcp4", "127.0.0.1:0")
	serveEcho(ln)
	master, slave := openPTY(t)
	cmd := exec.Command(cliBin, "--server", "http://"+d.addr, "-n", p.namespace, p.name, ":"+strconv.Itoa(port(ln)))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan int, 1)
	go func() {
		cmd.Wait()
		exited <- cmd.ProcessState.ExitCode()
	}()
	defer cmd.Process.Kill()

	var screen bytes.Buffer
	chunks := make(chan []byte, 64)
	go func() {
		for {
			b := make([]byte, 4096)
			n, err := master.Read(b)
			if n > 0 {
				chunks <- b[:n]
			}
			if err != nil {
				close(chunks)
				return
			}
		}
	}()
	waitFor := func(re *regexp.Regexp) []string {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			if m := re.FindStringSubmatch(screen.String()); m != nil {
				return m
			}
			select {
			case b, ok := <-chunks:
				if !ok {
					t.Fatalf("terminal closed; screen:\n%s", screen.String())
				}
				screen.Write(b)
			case <-deadline:
				t.Fatalf("%s not on the screen:\n%s", re, screen.String())
			}
		}
	}
	remote := strconv.Itoa(port(ln))
	m := waitFor(regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> ` + remote + `\r\nForwarding from \[::1\]:(\d+) -> ` + remote + `\r\n`))
	if m[1] != m[2] {
		t.Fatalf("IPv4 and IPv6 on different ports: %q", m[0])
	}
	conn := dialLocal(t, m[1])
	echoOnce(t, conn, "typed by a person")
	conn.Close()
	waitFor(regexp.MustCompile(fmt.Sprintf(`Handling connection for %s\r\n`, m[1])))

	master.Write([]byte{0x03}) // Ctrl-C: the terminal sends SIGINT
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("exit code %d after Ctrl-C; screen:\n%s", code, screen.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("portforward did not exit on Ctrl-C")
	}
}
