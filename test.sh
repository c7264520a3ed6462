#!/usr/bin/env bash
# The project's test command (README, "Run the tests"): formatting, vet, the
# race-enabled test suite, then every fuzz target for a short time on top of
# its checked-in seed corpus.
#
#   FUZZTIME=10s   how long each fuzz target runs (0 skips fuzzing)
#   IPOIBD_VMTEST=0 skips the qemu soft-RoCE tests
#
# The OpenSM tests (smtest) need ibsim-utils, opensm and infiniband-diags
# and the verbs driver built with cgo; without them they skip, each with
# a line saying what to install.
#
# It needs only Go; without gcc, tshark, rdma-core's headers or the VM
# tools it says first which packages bring them and what it skips.
set -euo pipefail
cd "$(dirname "$0")"
FUZZTIME=${FUZZTIME:-10s}

# What the full run needs beyond Go, as Debian/Ubuntu packages, and what is
# skipped without each. Missing pieces are named first, with the one
# command that installs them all; the run then goes on without them.
have() { command -v "$1" >/dev/null 2>&1; }
missing=() skipped=()
if ! have gcc; then
	missing+=(gcc libc6-dev)
	skipped+=("the race detector (tests run without -race) and the verbs driver's C side, so the OpenSM on ibsim tests (smtest) too")
fi
if [ ! -e /usr/include/infiniband/verbs.h ] || [ ! -e /usr/include/infiniband/umad.h ]; then
	missing+=(libibverbs-dev libibumad-dev)
	skipped+=("the verbs driver against rdma-core's headers (it builds without them and says so), so the OpenSM on ibsim tests (smtest) too")
fi
if ! have tshark; then
	missing+=(tshark)
	skipped+=("decoding the captures with tshark")
fi
vm=()
have qemu-system-x86_64 || vm+=(qemu-system-x86)
have busybox || [ -x /bin/busybox ] || vm+=(busybox-static)
have rdma || [ -x /sbin/rdma ] || [ -x /usr/sbin/rdma ] || vm+=(iproute2)
have modinfo || [ -x /sbin/modinfo ] || [ -x /usr/sbin/modinfo ] || vm+=(kmod)
[ -e /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so ] || vm+=(ibverbs-providers)
have ibv_devinfo || vm+=(ibverbs-utils)
if [ ${#vm[@]} -gt 0 ] && [ "${IPOIBD_VMTEST:-1}" != 0 ]; then
	missing+=("${vm[@]}")
	skipped+=("the qemu soft-RoCE tests (go test ./vmtest)")
fi
# OpenSM on an ibsim fabric, for the InfiniBand control plane (smtest).
sm=()
have ibsim || [ -x /usr/bin/ibsim ] || sm+=(ibsim-utils)
compgen -G '/usr/lib/*/umad2sim/libumad2sim.so' >/dev/null || [[ " ${sm[*]} " == *" ibsim-utils "* ]] || sm+=(ibsim-utils)
have opensm || [ -x /usr/sbin/opensm ] || sm+=(opensm)
have saquery || [ -x /usr/sbin/saquery ] || sm+=(infiniband-diags)
if [ ${#sm[@]} -gt 0 ]; then
	missing+=("${sm[@]}")
	skipped+=("the OpenSM on ibsim tests (go test ./smtest: broadcast and partition joins, paths, multicast, link events, SM failover)")
fi
if [ "$(id -u)" != 0 ]; then
	echo "== not root: the network-namespace tests (nstest: ipoibd daemons on the udp driver over veth pairs) skip; run as root for them"
elif ! have ip; then
	missing+=(iproute2)
	skipped+=("the network-namespace tests (nstest)")
fi
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo "
	echo "== missing: ${missing[*]}"
	echo "   install: ${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${missing[*]}"
	for s in "${skipped[@]}"; do echo "   skipped without them: $s"; done
fi
# IPOIBD_PREFLIGHT_ONLY=1 stops here (cmd/ipoibd's test of these lines).
[ "${IPOIBD_PREFLIGHT_ONLY:-0}" = 1 ] && exit 0
race=-race
if ! have gcc; then
	race=""
	export CGO_ENABLED=0
fi

echo "== gofmt"
bad=$(find . -name '*.go' -not -path './.git/*' -print0 | xargs -0 -r gofmt -l)
if [ -n "$bad" ]; then
	echo "gofmt would change:"; echo "$bad"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test $race"
go test $race -count=1 -timeout 20m ./...

# The race detector allocates, so the steady-state allocation tests skip
# under -race; they run here without it. The loop's wake-up tests run
# again, many times, with the timing of a build without the detector: a
# lost wake-up is a race that one run can miss.
echo "== go test (no -race): allocation counts, wake-up stress x20"
go test -count=1 -run 'Alloc' ./...
go test -count=20 -run '^(TestNoLostWakeupBeforePark|TestNotifyStressProcs|TestWakeLatencyMax|TestTryRun)$' ./aio

if [ "$FUZZTIME" != "0" ]; then
	echo "== fuzz ($FUZZTIME each)"
	for pkg in $(go list ./...); do
		dir=$(go list -f '{{.Dir}}' "$pkg")
		for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
			echo "-- $pkg $target"
			log=$(mktemp)
			if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 5s "$pkg" >"$log" 2>&1; then
				cat "$log"
				# Go 1.26's fuzz coordinator can report a bare "context
				# deadline exceeded" when -fuzztime ends while a worker is
				# mid-input (golang/go#75804, fixed in Go 1.27). A real
				# finding always writes a failing input; only that fails.
				if grep -q "context deadline exceeded" "$log" && ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$log"; then
					echo "(ignored: fuzz coordinator shutdown race, no failing input written)"
				else
					rm -f "$log"; exit 1
				fi
			else
				tail -n 1 "$log"
			fi
			rm -f "$log"
		done
	done
fi
echo "== all tests passed"
