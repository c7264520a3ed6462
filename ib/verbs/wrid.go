//go:build linux && cgo && !noverbs

package verbs

// Work request IDs. A completion names its work by the 64-bit ID it was
// posted with; the driver packs into it everything needed to find the
// buffer again without keeping Go pointers in C:
//
//	bits 63..33  QP handle (device.qps key)
//	bit  32      1 for a receive, 0 for a send
//	bits 31..0   receive buffer number or send slot number
//
// The kind bit is needed because a completion's opcode is undefined when
// its status is an error (a flushed receive looks like anything).

const (
	wrKindRecv  = uint64(1) << 32
	handleShift = 33
	// maxHandle is the largest QP handle that fits the ID.
	maxHandle = 1<<31 - 1
)

// wrID packs a work request ID.
func wrID(handle uint32, recv bool, idx uint32) uint64 {
	id := uint64(handle)<<handleShift | uint64(idx)
	if recv {
		id |= wrKindRecv
	}
	return id
}

// splitWRID unpacks a work request ID made by wrID.
func splitWRID(id uint64) (handle uint32, recv bool, idx uint32) {
	return uint32(id >> handleShift), id&wrKindRecv != 0, uint32(id)
}
