#!/usr/bin/env bash
# `make test-repeat N=30 [TESTS="timeouts executor"] [HOG=1]`: runs integration-test binaries
# N times each and prints every failure, to show a suite holds up (or to catch a flake and
# keep its log). Every run's output is kept under target/test-repeat/ when it fails, with the
# machine's stalls and clock steps during it (scripts/watch-stalls.py, all in stalls.log).
#
#   N      runs of each binary (default 10)
#   TESTS  binaries under tests/ to run (default: all of them)
#   HOG    1: every other run has a CPU hog beside it on every core (stress-ng, installed from
#          apt when missing), so that a test that only passes on an idle machine shows up
#   FILTER a test-name filter passed to each binary (default: none)
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${N:-10}
hog=${HOG:-0}
filter=${FILTER:-}
tests=${TESTS:-$(for f in tests/*.rs; do basename "$f" .rs; done)}
out=target/test-repeat
mkdir -p "$out"

if [ "$hog" = 1 ] && ! command -v stress-ng >/dev/null; then
    echo "== installing stress-ng (for HOG=1)"
    apt-get install -y -qq stress-ng >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq stress-ng; }
fi

# Stalls of the machine and clock steps, so that a failure can be told from a machine that
# stopped: the events during a failed run are printed with it.
stalls="$out/stalls.log"
: >"$stalls"
scripts/watch-stalls.py "$stalls" &
watcher=$!
trap 'kill $watcher 2>/dev/null' EXIT

echo "== building the test binaries"
cargo test --no-run --tests -q 2>&1 | grep -v '^ *Executable' || true

total_runs=0
total_failures=0
summary=()
for name in $tests; do
    failures=0
    for i in $(seq 1 "$runs"); do
        hog_pid=
        note=
        if [ "$hog" = 1 ] && [ $((i % 2)) = 0 ]; then
            stress-ng --cpu "$(nproc)" --timeout 0 --quiet &
            hog_pid=$!
            note=" (beside a CPU hog)"
        fi
        log="$out/$name-$i.log"
        start=$(date +%s)
        events_before=$(wc -l <"$stalls")
        if cargo test -q --test "$name" -- $filter >"$log" 2>&1; then
            rm -f "$log"
            result=ok
        else
            failures=$((failures + 1))
            result="FAILED, log: $log"
        fi
        if [ -n "$hog_pid" ]; then
            kill "$hog_pid" 2>/dev/null
            wait "$hog_pid" 2>/dev/null
        fi
        echo "$name run $i/$runs$note: $result ($(($(date +%s) - start)) s)"
        if [ "$result" != ok ]; then
            grep -E '^test .* FAILED$|panicked at' -A1 "$log" | sed 's/^/    /' | head -20
            echo "    machine events during the run (scripts/watch-stalls.py):"
            tail -n +"$((events_before + 1))" "$stalls" | sed 's/^/      /'
        fi
    done
    total_runs=$((total_runs + runs))
    total_failures=$((total_failures + failures))
    summary+=("$name: $runs runs, $failures failed")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
echo "$((total_runs - total_failures)) passed, $total_failures failed"
echo "machine events over all runs: $(($(wc -l <"$stalls") - 1)) (in $stalls)"
[ "$total_failures" = 0 ]
