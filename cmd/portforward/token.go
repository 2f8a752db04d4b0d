package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
)

// tokenFile is a bearer token read from a file, read again whenever the
// file changes (a projected service account token is rotated in place):
// raw and h2 send it on every connection, which a token that expired
// would fail, where a SPDY session is authenticated once.
type tokenFile struct {
	path string

	mu    sync.Mutex
	token string
	seen  os.FileInfo // of the file the token was read from
}

// newTokenFile reads path once; an unreadable or empty file is an error.
func newTokenFile(path string) (*tokenFile, error) {
	t := &tokenFile{path: path}
	if _, err := t.get(); err != nil {
		return nil, err
	}
	return t, nil
}

// get returns the token, read again if the file changed since. A file that
// cannot be read now keeps the token last read: the next connection may
// be refused for it, as it would with the token it had.
func (t *tokenFile) get() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fi, err := os.Stat(t.path)
	if err == nil && t.token != "" && sameVersion(fi, t.seen) {
		return t.token, nil
	}
	if err == nil {
		// On Windows, Stat of a file that is no link leaves its ID to the
		// first SameFile, which opens the path again then
		// (os/stat_windows.go's stat, os/types_windows.go's loadFileId):
		// fi, kept as seen, would take the ID of whatever file has the
		// path at the next get, and a file renamed over it with the same
		// size and time would look the same. This loads it now.
		os.SameFile(fi, fi)
		var b []byte
		if b, err = os.ReadFile(t.path); err == nil {
			tok := strings.TrimSpace(string(b))
			if tok == "" {
				err = errors.New("no token in it")
			} else {
				t.token, t.seen = tok, fi
			}
		}
	}
	if err != nil && t.token == "" {
		return "", fmt.Errorf("--token-file %s: %w", t.path, err)
	}
	return t.token, nil
}

// sameVersion reports whether two stats are of one version of a file: the
// same file (a rotation by rename, as the kubelet's projected volumes do,
// is another), size and modification time.
func sameVersion(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
