//go:build linux && cgo && !noverbs

package verbs

// Loading rdma-core at run time. The driver reaches libibverbs and
// libibumad through dlopen (shim.c) rather than linking them, so one
// binary starts everywhere and the driver says why it cannot run. Any
// goroutine.

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"sync"

	"github.com/ipoibd/ipoibd/ib"
)

// whyLen bounds the loader's reason.
const whyLen = 512

// loadVerbs loads libibverbs.so.1 once; every entry point that touches a
// device calls it first. Its error wraps ib.ErrUnavailable.
var loadVerbs = sync.OnceValue(func() error {
	var why [whyLen]C.char
	if C.ipo_load_verbs(&why[0], whyLen) == 0 {
		return nil
	}
	return unavailable(C.GoString(&why[0]), "libibverbs1 ibverbs-providers")
})

// loadUMAD loads libibumad.so.3 once, for MAD ports (InfiniBand only).
var loadUMAD = sync.OnceValue(func() error {
	var why [whyLen]C.char
	if C.ipo_load_umad(&why[0], whyLen) == 0 {
		return nil
	}
	return unavailable(C.GoString(&why[0]), "libibumad3")
})

// unavailable builds the one-line error of a loader that failed: what is
// missing and the Debian packages that bring it.
func unavailable(why, runtimePkgs string) error {
	if C.ipo_built_with_rdma() == 0 {
		return fmt.Errorf("verbs: %w: %s; install them (apt-get install libibverbs-dev libibumad-dev) and rebuild", ib.ErrUnavailable, why)
	}
	return fmt.Errorf("verbs: %w: %s; install it (apt-get install %s)", ib.ErrUnavailable, why, runtimePkgs)
}

// loadErr is why the driver cannot run in this build on this machine, or
// nil.
func loadErr() error { return loadVerbs() }
