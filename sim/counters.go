package sim

import (
	"fmt"
	"strings"
)

// DropReason says why the fabric discarded a packet or failed a work
// request. Every discard is counted under exactly one reason, on the fabric
// and on the host it is attributed to (see Counters).
type DropReason uint8

// Reasons a packet is discarded.
const (
	// DropBadCRC: the ICRC or VCRC did not match (a corrupted frame).
	DropBadCRC DropReason = iota
	// DropMalformed: the frame did not decode as a UD packet for another
	// reason (lengths, versions, opcode).
	DropMalformed
	// DropNoRoute: a switch had no forwarding entry for the DLID, the
	// multicast LID had no tree there, or the hop limit ran out.
	DropNoRoute
	// DropLinkDown: the packet met a link that is down.
	DropLinkDown
	// DropPortNotActive: the sending or receiving port is not ACTIVE (INIT
	// ports pass only subnet management traffic, which the simulator does
	// not carry in band).
	DropPortNotActive
	// DropWrongDLID: a unicast packet reached a port that does not own its
	// DLID (a stale address after a LID change).
	DropWrongDLID
	// DropPKey: the BTH P_Key is not in the receiving port's table, or does
	// not match the receiving UD QP's partition (IBA 10.9.3).
	DropPKey
	// DropQKey: the DETH Q_Key differs from the receiving QP's Q_Key
	// (IBA 10.2.4).
	DropQKey
	// DropNoQP: no QP of that number exists, no QP is attached to the
	// multicast group, or no MAD port is open for QP1 traffic.
	DropNoQP
	// DropNoRecvBuffer: the QP had no receive buffer posted (UD has no
	// receiver-not-ready retry; the datagram is lost).
	DropNoRecvBuffer
	// DropRecvLength: the datagram did not fit the receive buffer; the
	// buffer completes with ib.StatusLocalLength.
	DropRecvLength
	// DropSendLength: the payload exceeded the sending port's active MTU;
	// the send completes with ib.StatusLocalLength and nothing leaves.
	DropSendLength
	// DropOversize: the packet's payload exceeded the MTU of a link on its
	// route.
	DropOversize
	// DropCQOverflow: the completion queue was full; the datagram is lost
	// and its receive buffer stays posted.
	DropCQOverflow
	// DropLoss: the loss fault discarded the packet in flight.
	DropLoss
	// DropSMDown: an SA request arrived while the subnet manager is down.
	DropSMDown
	// DropMAD: a MAD the SA cannot answer at all (wrong base version, a
	// response, a class other than SA).
	DropMAD
	// DropFabricClosed: the fabric was closed while the packet was queued.
	DropFabricClosed

	// NumDropReasons is the number of reasons; Counters.Drops has this many
	// entries.
	NumDropReasons
)

var dropNames = [NumDropReasons]string{
	DropBadCRC:        "bad-crc",
	DropMalformed:     "malformed",
	DropNoRoute:       "no-route",
	DropLinkDown:      "link-down",
	DropPortNotActive: "port-not-active",
	DropWrongDLID:     "wrong-dlid",
	DropPKey:          "pkey-mismatch",
	DropQKey:          "qkey-mismatch",
	DropNoQP:          "no-qp",
	DropNoRecvBuffer:  "no-recv-buffer",
	DropRecvLength:    "recv-length",
	DropSendLength:    "send-length",
	DropOversize:      "oversize",
	DropCQOverflow:    "cq-overflow",
	DropLoss:          "loss-fault",
	DropSMDown:        "sm-down",
	DropMAD:           "mad-unanswerable",
	DropFabricClosed:  "fabric-closed",
}

// String returns a short kebab-case name, as `ipoibd stats` prints it.
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return fmt.Sprintf("drop(%d)", uint8(r))
}

// Counters is a snapshot of packet counters. On the fabric it counts every
// packet; on a host it counts the packets the host sent (Sent) or received
// (Delivered), drops detected at the host's ports on receive, and in-flight
// drops (loss, link down, no route, oversize, SM down) of packets the host
// sent.
type Counters struct {
	// Sent counts packets put on the wire by a port (SA replies included).
	Sent uint64
	// Delivered counts datagrams that completed successfully in a receive
	// buffer or reached a MAD port or the SA.
	Delivered uint64
	// Duplicated counts extra copies made by the duplication fault.
	Duplicated uint64
	// Delayed counts packets held back by the delay fault.
	Delayed uint64
	// Reordered counts packets the reordering fault let others overtake.
	Reordered uint64
	// Drops counts discards by reason.
	Drops [NumDropReasons]uint64
}

// Dropped returns the count for one reason.
func (c Counters) Dropped(r DropReason) uint64 {
	if r >= NumDropReasons {
		return 0
	}
	return c.Drops[r]
}

// TotalDrops returns the sum over every reason.
func (c Counters) TotalDrops() uint64 {
	var n uint64
	for _, v := range c.Drops {
		n += v
	}
	return n
}

// String lists the non-zero counters, e.g.
// "sent=4 delivered=3 drops{qkey-mismatch=1}".
func (c Counters) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "sent=%d delivered=%d", c.Sent, c.Delivered)
	if c.Duplicated != 0 {
		fmt.Fprintf(&sb, " duplicated=%d", c.Duplicated)
	}
	if c.Delayed != 0 {
		fmt.Fprintf(&sb, " delayed=%d", c.Delayed)
	}
	if c.Reordered != 0 {
		fmt.Fprintf(&sb, " reordered=%d", c.Reordered)
	}
	first := true
	for r, v := range c.Drops {
		if v == 0 {
			continue
		}
		if first {
			sb.WriteString(" drops{")
			first = false
		} else {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%v=%d", DropReason(r), v)
	}
	if !first {
		sb.WriteByte('}')
	}
	return sb.String()
}
