#!/usr/bin/env bash
# Runs every check and test: gofmt, go vet, the no-exec rule,
# `go test -race` over all packages, including the root tests and the e2e
# suite against the built (race-enabled) daemon, and every fuzz target for
# a few seconds. Run it as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the root tests need: iproute2 (ip netns), iptables (inside test
# pods' namespaces only), and for the CRI proxy's
# end-to-end test containerd with runc and the CNI plugins (the test
# starts and stops containerd itself). Installed here when missing, so
# this script is all a fresh machine needs.
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need+=(iptables) # a pod port that drops SYNs
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "== apt-get install ${need[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
	else
		echo "missing ${need[*]}: install them (Debian: apt-get install ${need[*]})" >&2
		exit 1
	fi
fi
mkdir -p /run/netns 2>/dev/null || true

echo "== gofmt"
unformatted=$(gofmt -l $(find . -name '*.go' -not -path './.git/*'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== the daemon never executes programs"
if go list -deps ./cmd/portforwardd | grep -qx 'os/exec'; then
	echo "os/exec is in the daemon's dependency graph:"
	go list -f '{{.ImportPath}}: {{join .Imports " "}}' $(go list -deps ./cmd/portforwardd) | grep 'os/exec' | cut -d: -f1
	exit 1
fi

echo "== the portforward CLI builds for macOS, Windows and 32-bit Linux, where operators run it (and its tests, vetted there)"
for target in darwin/arm64 windows/amd64 linux/arm; do
	GOOS=${target%/*} GOARCH=${target#*/} go build -o /dev/null ./cmd/portforward
	GOOS=${target%/*} GOARCH=${target#*/} go vet ./cmd/portforward
done
# The streams packages under the CLI, and their tests, on another Unix
# (their socket tests are Unix's: socket pairs, SO_LINGER).
GOOS=darwin GOARCH=arm64 go vet ./streams/...

echo "== go test -race"
export PORTFORWARDD_REQUIRE_ROOT="${PORTFORWARDD_REQUIRE_ROOT:-1}"
export PORTFORWARDD_E2E_RACE="${PORTFORWARDD_E2E_RACE:-1}"
go test -race -count=1 -timeout 30m "$@" ./...

echo "== fuzz targets, briefly (hack/fuzz.sh runs them longer)"
FUZZTIME="${FUZZTIME:-5s}" FUZZ_PARALLEL="${FUZZ_PARALLEL:-2}" hack/fuzz.sh
