//go:build linux && cgo && !noverbs

package verbs

// MAD ports: a libibumad agent for the SA class on an InfiniBand port.
// libibumad opens the port's /dev/infiniband/umad* file and registers the
// agent; after that the driver reads and writes MADs with umad_recv and
// umad_send, in the kernel's ib_user_mad format (umadHeader), with the fd
// on the loop (umad.go says how it differs under ibsim's libumad2sim).
// Control methods are in control.go, Send in io.go.

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// Layout of the kernel's user MAD header (struct ib_user_mad with the
// P_Key index extension that libibumad enables on open; <infiniband/umad.h>
// and the kernel's rdma/ib_user_mad.h). The first five fields are in host
// byte order, the address fields in network byte order.
const (
	umadOffAgentID   = 0
	umadOffStatus    = 4
	umadOffTimeout   = 8
	umadOffRetries   = 12
	umadOffLength    = 16
	umadOffQPN       = 20
	umadOffQKey      = 24
	umadOffLID       = 28
	umadOffSL        = 30
	umadOffPathBits  = 31
	umadOffGRH       = 32
	umadOffGIDIndex  = 33
	umadOffHopLimit  = 34
	umadOffTClass    = 35
	umadOffGID       = 36
	umadOffFlowLabel = 52
	umadOffPKeyIndex = 56
	// umadHeaderLen is the header size; the MAD follows it.
	umadHeaderLen = 64
	// umadMsgLen is one header plus one MAD, the only size this driver
	// reads or writes (it registers without RMPP, so no reply is longer).
	umadMsgLen = umadHeaderLen + ib.MADLen
)

// MAD constants this file relies on.
const (
	// madOffMethod and madOffTID locate the Method byte and the
	// transaction ID in the common MAD header (IBA 13.4.2).
	madOffMethod = 3
	madOffTID    = 8
	// madReplyWindowMS is how long the kernel keeps a sent request to
	// match its reply; a reply after that is dropped by the kernel. The SA
	// client retransmits on its own schedule, so the kernel never retries
	// (retries 0) and the window only has to cover one round trip.
	madReplyWindowMS = 8000
	// tidSlots is how many recent requests the TID table remembers.
	tidSlots = 64
)

// umadHeader is the kernel's per-MAD header: who the MAD goes to or came
// from, and for sends how long the kernel waits for a reply.
type umadHeader struct {
	// AgentID is the registered agent the MAD belongs to.
	AgentID uint32
	// Status is 0 for a received MAD; a request whose reply window passed
	// comes back with ETIMEDOUT here.
	Status uint32
	// TimeoutMS and Retries tell the kernel how to wait for a reply.
	TimeoutMS uint32
	Retries   uint32
	// Length is the MAD length the kernel reports on receive.
	Length uint32
	// QPN, QKey, LID, SL and PathBits address the peer (IBA 13.5.3).
	QPN      ib.QPN
	QKey     ib.QKey
	LID      ib.LID
	SL       ib.SL
	PathBits uint8
	// GRHPresent says the fields below it are valid.
	GRHPresent bool
	GIDIndex   uint8
	HopLimit   uint8
	TClass     uint8
	GID        ib.GID
	FlowLabel  uint32
	// PKeyIndex selects the partition the MAD is sent in or arrived in.
	PKeyIndex uint16
}

// ErrUMADShort says a user MAD buffer is shorter than its header.
var ErrUMADShort = errors.New("verbs: user MAD shorter than its 64-byte header")

// Decode fills h from the first umadHeaderLen bytes of b.
func (h *umadHeader) Decode(b []byte) error {
	if len(b) < umadHeaderLen {
		return fmt.Errorf("decode user MAD header: %d bytes: %w", len(b), ErrUMADShort)
	}
	ne := binary.NativeEndian
	be := binary.BigEndian
	h.AgentID = ne.Uint32(b[umadOffAgentID:])
	h.Status = ne.Uint32(b[umadOffStatus:])
	h.TimeoutMS = ne.Uint32(b[umadOffTimeout:])
	h.Retries = ne.Uint32(b[umadOffRetries:])
	h.Length = ne.Uint32(b[umadOffLength:])
	h.QPN = ib.QPN(be.Uint32(b[umadOffQPN:]))
	h.QKey = ib.QKey(be.Uint32(b[umadOffQKey:]))
	h.LID = ib.LID(be.Uint16(b[umadOffLID:]))
	h.SL = ib.SL(b[umadOffSL])
	h.PathBits = b[umadOffPathBits]
	h.GRHPresent = b[umadOffGRH] != 0
	h.GIDIndex = b[umadOffGIDIndex]
	h.HopLimit = b[umadOffHopLimit]
	h.TClass = b[umadOffTClass]
	copy(h.GID[:], b[umadOffGID:umadOffGID+16])
	h.FlowLabel = be.Uint32(b[umadOffFlowLabel:])
	h.PKeyIndex = ne.Uint16(b[umadOffPKeyIndex:])
	return nil
}

// Encode writes h into the first umadHeaderLen bytes of b, reserved bytes
// zero.
func (h *umadHeader) Encode(b []byte) error {
	if len(b) < umadHeaderLen {
		return fmt.Errorf("encode user MAD header: buffer %d bytes: %w", len(b), ErrUMADShort)
	}
	ne := binary.NativeEndian
	be := binary.BigEndian
	ne.PutUint32(b[umadOffAgentID:], h.AgentID)
	ne.PutUint32(b[umadOffStatus:], h.Status)
	ne.PutUint32(b[umadOffTimeout:], h.TimeoutMS)
	ne.PutUint32(b[umadOffRetries:], h.Retries)
	ne.PutUint32(b[umadOffLength:], h.Length)
	be.PutUint32(b[umadOffQPN:], uint32(h.QPN))
	be.PutUint32(b[umadOffQKey:], uint32(h.QKey))
	be.PutUint16(b[umadOffLID:], uint16(h.LID))
	b[umadOffSL] = uint8(h.SL)
	b[umadOffPathBits] = h.PathBits
	b[umadOffGRH] = 0
	if h.GRHPresent {
		b[umadOffGRH] = 1
	}
	b[umadOffGIDIndex] = h.GIDIndex
	b[umadOffHopLimit] = h.HopLimit
	b[umadOffTClass] = h.TClass
	copy(b[umadOffGID:umadOffGID+16], h.GID[:])
	be.PutUint32(b[umadOffFlowLabel:], h.FlowLabel)
	ne.PutUint16(b[umadOffPKeyIndex:], h.PKeyIndex)
	clear(b[umadOffPKeyIndex+2 : umadHeaderLen])
	return nil
}

// tidTable undoes the kernel's TID rewrite. The kernel routes a reply to
// the agent that sent the request by the high 32 bits of the TID, which it
// overwrites with the agent's own value when the request goes out; the
// reply carries the rewritten TID. The SA client matches replies by the
// TID it chose, so the port remembers the low 32 bits of each recent
// request with the full TID and puts the high half back on the reply.
type tidTable struct {
	slot [tidSlots]uint64
	used [tidSlots]bool
	next int
}

// remember records a request's TID, replacing an older one with the same
// low half (a retransmission, or a TID the client has moved on from).
func (t *tidTable) remember(tid uint64) {
	low := uint32(tid)
	for i := range t.slot {
		if t.used[i] && uint32(t.slot[i]) == low {
			t.slot[i] = tid
			return
		}
	}
	t.slot[t.next] = tid
	t.used[t.next] = true
	t.next = (t.next + 1) % tidSlots
}

// restore returns the TID the request was sent with, or tid unchanged
// when no recent request had its low half.
func (t *tidTable) restore(tid uint64) uint64 {
	low := uint32(tid)
	for i := range t.slot {
		if t.used[i] && uint32(t.slot[i]) == low {
			return t.slot[i]
		}
	}
	return tid
}

// isRequest reports whether mad is a request whose TID the kernel will
// rewrite (the R bit of Method clear, IBA 13.4.2).
func isRequest(mad []byte) bool {
	return mad[madOffMethod]&byte(ib.MethodResponse) == 0
}

// madPort is one umad agent. Loop only, except the reader goroutine of a
// port under libumad2sim (umad.go), which touches only reader.
type madPort struct {
	loop    *aio.Context
	name    string // the HCA, for messages
	port    int
	portID  int // libibumad's handle, the umad file's fd
	fd      int
	agent   uint32
	handler func(ib.MADAddress, []byte)
	tids    tidTable
	gone    bool
	// watched says the fd is on the loop; reader is set instead under
	// libumad2sim.
	watched bool
	reader  *simReader
	// onClose lets the device that opened the port forget it.
	onClose func(*madPort)
	// rbuf is larger than any message the kernel delivers to an agent
	// registered without RMPP, so a read never fails for size; wbuf holds
	// one outgoing message.
	rbuf [umadHeaderLen + 2048]byte
	wbuf [umadMsgLen]byte
	hdr  umadHeader
}

// received handles one message read from the umad file: drop what is not
// a MAD for the handler (a request whose reply window passed comes back
// with a non-zero status), restore the TID of replies, and pass it on.
// It reports whether the handler was called.
func (m *madPort) received(b []byte) bool {
	if err := m.hdr.Decode(b); err != nil || m.hdr.Status != 0 {
		return false
	}
	mad := b[umadHeaderLen:]
	if len(mad) != ib.MADLen || m.handler == nil {
		return false
	}
	if !isRequest(mad) {
		tid := binary.BigEndian.Uint64(mad[madOffTID:])
		binary.BigEndian.PutUint64(mad[madOffTID:], m.tids.restore(tid))
	}
	src := ib.MADAddress{
		LID:       m.hdr.LID,
		SL:        m.hdr.SL,
		QPN:       m.hdr.QPN & ib.QPNMask,
		QKey:      m.hdr.QKey,
		PKeyIndex: int(m.hdr.PKeyIndex),
	}
	m.handler(src, mad)
	return true
}
