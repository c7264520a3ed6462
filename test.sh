#!/usr/bin/env bash
# The project's test command (README, "Run the tests"): formatting, vet, the
# race-enabled test suite, then every fuzz target for a short time on top of
# its checked-in seed corpus.
#
#   FUZZTIME=10s   how long each fuzz target runs (0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")"
FUZZTIME=${FUZZTIME:-10s}

echo "== gofmt"
bad=$(find . -name '*.go' -not -path './.git/*' -print0 | xargs -0 -r gofmt -l)
if [ -n "$bad" ]; then
	echo "gofmt would change:"; echo "$bad"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

if [ "$FUZZTIME" != "0" ]; then
	echo "== fuzz ($FUZZTIME each)"
	for pkg in $(go list ./...); do
		dir=$(go list -f '{{.Dir}}' "$pkg")
		for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
			echo "-- $pkg $target"
			go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 5s "$pkg"
		done
	done
fi
echo "== all tests passed"
