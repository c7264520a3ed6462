//go:build linux && cgo && !noverbs

package verbs

// What the tests compare with the C headers: the umad header's field
// offsets and the libibverbs enum values this package hard-codes. The
// values come from shim.c, which reports -1 for every one when the package
// was built without the rdma-core headers (cBuiltWithRDMA is then false).

/*
#include "shim.h"
*/
import "C"

// cBuiltWithRDMA says whether shim.c was compiled against the rdma-core
// headers.
func cBuiltWithRDMA() bool { return C.ipo_built_with_rdma() != 0 }

// cUMADOffsets returns the C offsets of the header fields, in the order
// of the umadOff* constants, then the offset of the MAD data.
func cUMADOffsets() []int {
	out := make([]int, 18)
	for i := range out {
		out[i] = int(C.ipo_umad_off(C.int(i)))
	}
	return out
}

// cEnumValues returns the C values of the enums listed in shim.c's
// ipo_enum_values, in that order.
func cEnumValues() []int {
	out := make([]int, 16)
	for i := range out {
		out[i] = int(C.ipo_enum(C.int(i)))
	}
	return out
}
