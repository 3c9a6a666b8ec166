#!/usr/bin/env bash
# The suite as `make test` runs it: two pytest processes at once. The tests that start a
# Kafka, Postgres and Redis of their own (marked own_stack: mostly waiting on brokers to
# boot and to be fenced) run beside the tests on the default stack. Each group runs its
# tests one after another, as a single pytest would, and the groups share nothing: an
# own_stack test never touches the default stack.
# (pytest-xdist's --dist loadgroup would do this, but not with pytest 9: it marks a group
# by renaming node ids, which pytest 9 no longer reads.)
#
# Arguments go to both (`make test PYTEST_ARGS="-k cancel"`). The own_stack group's output
# is written to .run/pytest-own-stack.log and printed after the other's. The exit code is
# the first failing group's; a group the arguments leave empty (5: no tests) is no failure.
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
log=.run/pytest-own-stack.log
mkdir -p .run

# The cache (last failed) is the default group's; two writers would race for it.
"$py" -m pytest -m own_stack -p no:cacheprovider "$@" >"$log" 2>&1 &
own=$!
trap 'kill -INT $own 2>/dev/null; wait $own' INT TERM
"$py" -m pytest -m "not own_stack" "$@"
main_rc=$?
echo "make test: waiting for the tests with a stack of their own (log: $log)"
wait $own
own_rc=$?
trap - INT TERM
echo "========== the tests with a stack of their own ($log) =========="
cat "$log"

ok() { [[ $1 -eq 0 || $1 -eq 5 ]]; }
if ! ok $main_rc; then exit $main_rc; fi
if ! ok $own_rc; then exit $own_rc; fi
# Both empty: nothing matched the arguments, which pytest calls an error.
if [[ $main_rc -eq 5 && $own_rc -eq 5 ]]; then exit 5; fi
exit 0
