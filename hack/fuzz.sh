#!/usr/bin/env bash
# Runs every Go fuzz target in the repository, one after the other, each
# for FUZZTIME, then prints a table: target, duration, execs, new
# interesting inputs, result. Exits 1 if any target fails, saying where
# the failing input is (a new crasher is written to the package's
# testdata/fuzz/<FuzzName>/, so plain `go test` reproduces it from then on).
#
#   hack/fuzz.sh [FUZZTIME]            time per target, default 10m (also: FUZZTIME=...)
#   FUZZTIME=5s hack/fuzz.sh           the CI form: seed corpora, then a few seconds each
#   FUZZ_PARALLEL=1 hack/fuzz.sh 2m    fuzzing workers per target (default 2)
#   FUZZ_MATCH=Channel hack/fuzz.sh    only targets whose name matches (grep -E)
#
# FUZZ_MINIMIZETIME (default 10s) bounds the minimization of each new input
# (go test's default, 60s, can leave a short run doing nothing else).
# A run that fails with nothing but Go's "context deadline exceeded" as
# -fuzztime ends (golang/go#75804: a starved worker was mid-input; no
# crasher) is decided by a replay of the target's corpus instead.
# Logs are kept in FUZZ_LOGDIR (default a new temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime="${1:-${FUZZTIME:-10m}}"
parallel="${FUZZ_PARALLEL:-2}"
minimize="${FUZZ_MINIMIZETIME:-10s}"
match="${FUZZ_MATCH:-.}"
logdir="${FUZZ_LOGDIR:-$(mktemp -d "${TMPDIR:-/tmp}/fuzz.XXXXXX")}"
mkdir -p "$logdir"

# Packages with fuzz targets, found by grep so that packages without any
# (e2e, which needs root) are not compiled; go test -list then names the
# targets that build on this platform.
mapfile -t pkgs < <(grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . |
	xargs -r -n1 dirname | sort -u)
if [ ${#pkgs[@]} -eq 0 ]; then
	echo "no fuzz targets found" >&2
	exit 1
fi

targets=() # "pkg name"
for pkg in "${pkgs[@]}"; do
	if ! names=$(go test -list '^Fuzz' "$pkg" 2>"$logdir/list.err"); then
		cat "$logdir/list.err" >&2
		echo "go test -list failed in $pkg" >&2
		exit 1
	fi
	while read -r name; do
		if [[ $name == Fuzz* ]] && grep -qE -- "$match" <<<"$name"; then
			targets+=("$pkg $name")
		fi
	done <<<"$names"
done
echo "== ${#targets[@]} fuzz targets, $fuzztime each, $parallel workers; logs in $logdir"

# last_field prints the number after "$2: " in the last progress line of
# log $1 ("fuzz: elapsed: 3s, execs: 1234 (411/sec), new interesting: 5 (total: 9)").
last_field() {
	{ grep -E '^fuzz: elapsed: .*, execs: ' "$1" || true; } | tail -n 1 | sed -nE "s/.*$2: ([0-9]+).*/\1/p"
}

# deadline_race reports whether log $1 failed only with the bare "context
# deadline exceeded" that Go's fuzzing coordinator returns when -fuzztime
# ends while a worker is still running an input: no crasher written, no
# panic, no failure from the target itself.
deadline_race() {
	grep -qx '    context deadline exceeded' "$1" &&
		! grep -qE 'Failing input written to|failure while testing seed corpus|^panic:|_test\.go:[0-9]+:' "$1"
}

rows=()
failures=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	log="${pkg#./}.$name.log"
	log="$logdir/${log//\//_}"
	echo "== $pkg $name"
	start=$SECONDS
	result=ok
	if ! go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" \
		-parallel "$parallel" "$pkg" >"$log" 2>&1; then
		result=FAIL
		if deadline_race "$log"; then
			# Go's fuzzing coordinator can fail a run whose -fuzztime
			# ends while a starved worker is mid-input (golang/go#75804):
			# nothing was found, so the corpus replay decides.
			if go test -run "^$name\$" "$pkg" >>"$log" 2>&1; then
				result="ok (deadline race; corpus replay passed)"
			fi
		fi
	fi
	duration="$((SECONDS - start))s"
	execs=$(last_field "$log" execs)
	interesting=$(last_field "$log" 'new interesting')
	rows+=("$(printf '%-46s %8s %12s %12s  %s' "${pkg#./}.$name" "$duration" "${execs:--}" "${interesting:--}" "$result")")
	if [ "$result" = FAIL ]; then
		crasher=$(sed -nE 's/.*Failing input written to (.*)$/\1/p' "$log" | tail -n 1)
		seed=$(sed -nE 's/.*failure while testing seed corpus entry: (.*)$/\1/p' "$log" | tail -n 1)
		if [ -n "$crasher" ]; then
			where="new crasher ${pkg#./}/$crasher; reproduce: go test -run '^$name/$(basename "$crasher")\$' $pkg"
		elif [ -n "$seed" ]; then
			where="seed corpus entry $seed fails; reproduce: go test -run '^$name\$' $pkg"
		else
			where="see $log"
		fi
		failures+=("${pkg#./}.$name: $where")
		tail -n 30 "$log" | sed 's/^/    /'
	fi
done

echo
printf '%-46s %8s %12s %12s  %s\n' target duration execs interesting result
printf '%s\n' "${rows[@]}"
if [ ${#failures[@]} -gt 0 ]; then
	echo
	echo "${#failures[@]} fuzz target(s) failed:"
	printf '  %s\n' "${failures[@]}"
	echo "logs: $logdir"
	exit 1
fi
