package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"
)

// checkEvery bounds how often a handshake stats the files.
const checkEvery = time.Second

// Files names the files a Reloader serves. CertFile and KeyFile are
// required; ClientCAFile is optional.
type Files struct {
	CertFile, KeyFile string
	ClientCAFile      string
}

// Reloader holds the current certificate and client CA pool.
type Reloader struct {
	files Files
	// OnReload, if set, is told the outcome of every load after the first:
	// nil for success.
	OnReload func(err error)

	mu        sync.Mutex
	cert      *tls.Certificate
	pool      *x509.CertPool
	stamps    [3]stamp // of CertFile, KeyFile, ClientCAFile as last seen
	lastCheck time.Time
}

// stamp identifies one version of a file; a file that is not there has
// one too (missing), so that its absence is one state, seen once, and not
// a change at every check.
type stamp struct {
	ino, size int64
	mtime     time.Time
	missing   bool
}

func statFile(path string) (stamp, error) {
	if path == "" {
		return stamp{}, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{missing: errors.Is(err, fs.ErrNotExist)}, err
	}
	st := stamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = int64(sys.Ino)
	}
	return st, nil
}

// New loads files once; an error here is a configuration error.
func New(files Files) (*Reloader, error) {
	if files.CertFile == "" || files.KeyFile == "" {
		return nil, errors.New("tls: both a certificate file and a private key file are needed")
	}
	r := &Reloader{files: files}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	r.lastCheck = time.Now()
	return r, nil
}

func (r *Reloader) paths() [3]string {
	return [3]string{r.files.CertFile, r.files.KeyFile, r.files.ClientCAFile}
}

// load reads every file; on success it replaces what is served. It
// returns the files' stamps as they were before it read them, so that a
// write finishing during a failed load still counts as a change. r.mu is
// held by the caller or r is not shared yet.
func (r *Reloader) load() ([3]stamp, error) {
	var stamps [3]stamp
	var serr error
	for i, p := range r.paths() {
		st, err := statFile(p)
		if err != nil && serr == nil {
			serr = fmt.Errorf("tls: %w", err)
		}
		stamps[i] = st
	}
	if serr != nil {
		return stamps, serr
	}
	cert, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
	if err != nil {
		return stamps, fmt.Errorf("tls: load %s and %s: %w", r.files.CertFile, r.files.KeyFile, err)
	}
	var pool *x509.CertPool
	if r.files.ClientCAFile != "" {
		pem, err := os.ReadFile(r.files.ClientCAFile)
		if err != nil {
			return stamps, fmt.Errorf("tls: client CA: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return stamps, fmt.Errorf("tls: client CA %s: no PEM certificate in it", r.files.ClientCAFile)
		}
	}
	r.cert, r.pool, r.stamps = &cert, pool, stamps
	return stamps, nil
}

// Check loads the files again if any changed since the last load, and
// returns the load's error (nil if nothing changed).
func (r *Reloader) Check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkLocked()
}

func (r *Reloader) checkLocked() error {
	r.lastCheck = time.Now()
	changed := false
	for i, p := range r.paths() {
		st, err := statFile(p)
		if err != nil && !st.missing || st != r.stamps[i] {
			changed = true
			break
		}
	}
	if !changed {
		return nil
	}
	stamps, err := r.load()
	if err != nil && !shortage(err) {
		// Keep serving the old pair and wait for the next change: the
		// stamps are those taken before the failed read, so a write that
		// finished since (the second half of a rotation) is one.
		r.stamps = stamps
	}
	if r.OnReload != nil {
		r.OnReload(err)
	}
	return err
}

// shortage reports whether err is the daemon's want of a file descriptor
// or memory to read the files with: nothing is wrong with them, and the
// next check loads them again rather than waiting for another change.
func shortage(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.ENOBUFS} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// maybeCheck is Check at most once per checkEvery.
func (r *Reloader) maybeCheck() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastCheck) >= checkEvery {
		r.checkLocked()
	}
}

// Certificate returns the certificate served now.
func (r *Reloader) Certificate() *tls.Certificate {
	r.maybeCheck()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert
}

// ClientCAs returns the client CA pool now; nil without a ClientCAFile.
func (r *Reloader) ClientCAs() *x509.CertPool {
	r.maybeCheck()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pool
}

// Watch checks the files every interval until ctx ends, so that a failing
// reload is reported even without handshakes.
func (r *Reloader) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Check()
		}
	}
}

// TLSConfig returns the server configuration: the current certificate on
// every handshake, TLS ≥ 1.2, ALPN h2 and http/1.1, and, with a client CA
// file, client certificates requested (verified per request by the
// caller against ClientCAs).
func (r *Reloader) TLSConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.Certificate(), nil
		},
	}
	if r.files.ClientCAFile != "" {
		cfg.ClientAuth = tls.RequestClientCert
	}
	return cfg
}
