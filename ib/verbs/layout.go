//go:build linux && cgo && !noverbs

package verbs

// The C layout of the kernel's user MAD header as <infiniband/umad.h>
// declares it, and the libibverbs enum values the driver names in Go, so
// a test can check the Go copies against the compiler's (test files cannot
// use cgo themselves).

/*
#include <stddef.h>
#include <infiniband/umad.h>
#include <infiniband/verbs.h>

static const int ipo_enum_values[] = {
	IBV_WC_SUCCESS, IBV_WC_LOC_LEN_ERR, IBV_WC_LOC_PROT_ERR, IBV_WC_WR_FLUSH_ERR, IBV_WC_GRH,
	IBV_EVENT_PORT_ACTIVE, IBV_EVENT_PORT_ERR, IBV_EVENT_LID_CHANGE, IBV_EVENT_PKEY_CHANGE,
	IBV_EVENT_SM_CHANGE, IBV_EVENT_DEVICE_FATAL, IBV_EVENT_CLIENT_REREGISTER, IBV_EVENT_GID_CHANGE,
	IBV_LINK_LAYER_UNSPECIFIED, IBV_LINK_LAYER_INFINIBAND, IBV_LINK_LAYER_ETHERNET,
};

static int ipo_enum(int i)
{
	return ipo_enum_values[i];
}

static size_t ipo_umad_off(int field)
{
	switch (field) {
	case 0: return offsetof(struct ib_user_mad, agent_id);
	case 1: return offsetof(struct ib_user_mad, status);
	case 2: return offsetof(struct ib_user_mad, timeout_ms);
	case 3: return offsetof(struct ib_user_mad, retries);
	case 4: return offsetof(struct ib_user_mad, length);
	case 5: return offsetof(struct ib_user_mad, addr.qpn);
	case 6: return offsetof(struct ib_user_mad, addr.qkey);
	case 7: return offsetof(struct ib_user_mad, addr.lid);
	case 8: return offsetof(struct ib_user_mad, addr.sl);
	case 9: return offsetof(struct ib_user_mad, addr.path_bits);
	case 10: return offsetof(struct ib_user_mad, addr.grh_present);
	case 11: return offsetof(struct ib_user_mad, addr.gid_index);
	case 12: return offsetof(struct ib_user_mad, addr.hop_limit);
	case 13: return offsetof(struct ib_user_mad, addr.traffic_class);
	case 14: return offsetof(struct ib_user_mad, addr.gid);
	case 15: return offsetof(struct ib_user_mad, addr.flow_label);
	case 16: return offsetof(struct ib_user_mad, addr.pkey_index);
	case 17: return offsetof(struct ib_user_mad, data);
	}
	return (size_t)-1;
}
*/
import "C"

// cUMADOffsets returns the C offsets of the header fields, in the order
// of the umadOff* constants, then the offset of the MAD data.
func cUMADOffsets() []int {
	out := make([]int, 18)
	for i := range out {
		out[i] = int(C.ipo_umad_off(C.int(i)))
	}
	return out
}

// cEnumValues returns, in order, the C values of the libibverbs constants
// cq.go, device.go and probe.go copy.
func cEnumValues() []int {
	out := make([]int, 16)
	for i := range out {
		out[i] = int(C.ipo_enum(C.int(i)))
	}
	return out
}
