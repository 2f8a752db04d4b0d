//go:build !windows

package main

import "syscall"

// shortageErrnos are localShortage's errnos.
var shortageErrnos []syscall.Errno = unixShortages
