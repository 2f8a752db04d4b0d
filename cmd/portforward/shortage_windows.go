package main

import (
	"syscall"

	"golang.org/x/sys/windows"
)

// shortageErrnos are localShortage's errnos: Winsock's, not the syscall
// package's EMFILE and the others, which on Windows are invented numbers
// no socket call returns (see winsockShortages).
var shortageErrnos []syscall.Errno = winsockShortages

// winsockShortages's numbers are x/sys/windows's: each index below is
// constant, and out of range (or, below zero, an overflow of the unsigned
// Errno) unless the two are equal, which fails the build.
var _ = [1]struct{}{}[windows.ERROR_NOT_ENOUGH_MEMORY-errNotEnoughMemory]
var _ = [1]struct{}{}[windows.WSAEMFILE-wsaEMFILE]
var _ = [1]struct{}{}[windows.WSAEADDRNOTAVAIL-wsaEADDRNOTAVAIL]
var _ = [1]struct{}{}[windows.WSAENOBUFS-wsaENOBUFS]
