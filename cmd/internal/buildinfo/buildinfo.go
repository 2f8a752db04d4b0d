// Package buildinfo names the version of the binary it is built into, for
// the --version of portforwardd and portforward.
package buildinfo

import "runtime/debug"

// Version returns stamped, the version a build set in its main package
// with -ldflags "-X main.version=...", if any; else the module version
// that `go install ...@v1.2.3` records; else "dev".
func Version(stamped string) string {
	if stamped != "" {
		return stamped
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
