package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// The CLI paths (cli-spdy, cli-raw, cli-h2) run the portforward CLI as its
// own process, as a user runs it: the bench's clients connect to the local
// port it listens on, as they connect to client-go's on the kubectl path,
// and the CLI carries each connection to portforwardd over its transport.

// cliBinary returns bin, or when it is empty the CLI built from
// ./cmd/portforward into the bench's temporary directory (once).
func (e *benchEnv) cliBinary(bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	if e.cli != "" {
		return e.cli, nil
	}
	out := filepath.Join(e.tmp, "portforward")
	if b, err := exec.Command("go", "build", "-o", out, "./cmd/portforward").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the portforward CLI: %v\n%s", err, b)
	}
	e.cli = out
	return out, nil
}

// startCLI runs the CLI forwarding a local port on 127.0.0.1 (the kernel
// picks it) to the pod's port remote over transport, and returns it once
// it listens, with the local address as its addr. Its standard output
// ("Handling connection for N", a line per connection) is read and
// dropped for as long as it runs; the tail of its standard error is kept
// for the bench's errors (proc.logTail).
func startCLI(bin, server, transport, namespace, pod string, remote int) (*proc, error) {
	cmd := exec.Command(bin, "--server", server, "--transport", transport, "--address", "127.0.0.1",
		"-n", namespace, pod, ":"+strconv.Itoa(remote))
	log := &tailBuffer{max: 4 << 10}
	cmd.Stderr = log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if port, ok := forwardingPort(sc.Text(), remote); ok {
			go io.Copy(io.Discard, stdout)
			return &proc{cmd: cmd, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), log: log}, nil
		}
	}
	cmd.Process.Kill()
	cmd.Wait() // the copy into log is done after this
	return nil, fmt.Errorf("portforward --transport %s: %s before it listened: %s", transport, cmd.ProcessState, strings.TrimSpace(log.String()))
}

// forwardingPort reads the local port out of the line the CLI (as
// kubectl) prints for each listener, "Forwarding from 127.0.0.1:N -> P",
// if the line is one, for the remote port P.
func forwardingPort(line string, remote int) (int, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Forwarding from ")
	if !ok {
		return 0, false
	}
	local, p, ok := strings.Cut(rest, " -> ")
	if !ok || p != strconv.Itoa(remote) {
		return 0, false
	}
	_, port, err := net.SplitHostPort(local)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return 0, false
	}
	return int(n), true
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int

	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// logTail is what the process last wrote on standard error, if the bench
// keeps it (the CLI's), as a suffix for an error.
func (p *proc) logTail() string {
	if p == nil || p.log == nil {
		return ""
	}
	if s := strings.TrimSpace(p.log.String()); s != "" {
		return " (portforward's stderr: " + s + ")"
	}
	return ""
}

// explain adds to err, from a measurement of p, what p's client process
// last reported, if it has one: the CLI says why it failed a connection.
func (p path) explain(err error) error {
	if tail := p.client.logTail(); tail != "" && !errors.Is(err, errNotApplicable) {
		return fmt.Errorf("%w%s", err, tail)
	}
	return err
}
