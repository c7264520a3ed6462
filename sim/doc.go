// Package sim is a simulated InfiniBand subnet that speaks the real wire
// formats, and an ib driver ("sim") over it. Every datagram is a UD packet
// (LRH, optional GRH, BTH, DETH, payload, ICRC, VCRC) built and checked
// with the ib codecs; every SA exchange is a 256-byte MAD on QP1. Where
// ibsim models only management traffic, this fabric has a data plane.
//
// # Building a fabric
//
// New creates an empty fabric on an aio loop. AddHost and AddSwitch add
// nodes, Connect cables their ports, Start runs the subnet manager's first
// sweep. Star and Tree build the common shapes in one call. Hosts get
// node and port GUIDs (derived, or from HostConfig), a default GID of
// fe80::<port GUID>, the P_Key table {0xFFFF} unless configured, and the
// fabric's MTU (4096) and rate; links run at the smaller of their ends.
//
// Host.Open (or ib.Open with driver "sim" and the name "<fabric>/<host>")
// gives an ib.Device. The driver's Probe lists the hosts of every fabric
// that is alive in the process.
//
// # The subnet manager and administrator
//
// The SM runs on Config.SMNode (default: the first switch, on its
// management port 0). A sweep finds the ports it can reach through
// switches, gives them LIDs from 1 (HostConfig.LIDs pins them), points
// every switch's linear forwarding table along shortest paths, builds a
// multicast tree per group, sets every port's SM LID and moves ports from
// INIT to ACTIVE with ib.EventPortActive. Routing costs O(switches ×
// (switches + links) + LIDs × switches); pairs of hosts are never
// enumerated, so a 1024-host tree sweeps in milliseconds.
//
// The SA answers requests arriving at the SM's port on QP1 with Q_Key
// 0x80010000, and replies the same way (with a GRH if the request had one):
//
//   - PathRecord Get, by SGID or SLID (or the requester) to DGID or DLID:
//     DLID, SLID, the smallest MTU and rate along the route (after
//     selectors), SL, a P_Key both ends hold (ERR_NO_RECORDS when they
//     share no partition, or for unknown or inactive ports), the subnet's
//     packet lifetime, reversible set and NumbPath 0, the way OpenSM fills
//     them. A multicast DGID or DLID answers with the group's parameters.
//   - MCMemberRecord Set (join): the first full-member join creates the
//     group. Creation needs the components OpenSM insists on (Q_Key,
//     P_Key, SL, FlowLabel, TClass, JoinState, PortGID; MTU, rate and
//     lifetime each with their selector or not at all), else
//     ERR_REQ_INSUFFICIENT_COMPONENTS; unstated MTU and rate come from
//     Config.Group, lowered to what the creator's port can do; the
//     PacketLifeTime and Scope fields are kept as the creator sent them,
//     named in the mask or not, as OpenSM keeps them. A zero MGID
//     makes the SA allocate one (signature 0xA01B). MLIDs come from 0xC000
//     up. Later joins must agree with the group's parameters and the port
//     must hold its partition and meet its MTU and rate, else
//     ERR_REQ_INVALID; a join that is not a full member of a missing group
//     gets ERR_NO_RECORDS.
//   - MCMemberRecord Delete (leave) clears join states; the group goes when
//     its last full member leaves.
//   - Config.IPoIBPartitions: the SM makes those partitions' IPoIB
//     broadcast groups when it starts (and again after a restart), with
//     Config.Group's parameters, and keeps them without members, as
//     OpenSM does for partitions.conf lines marked ipoib. smtest compares
//     these answers with OpenSM's on ibsim (docs/protocol.md).
//   - MCMemberRecord Get returns one membership (PortGID in the mask) or
//     one group.
//
// Anything else is answered with the MAD status "method/attribute
// combination not supported". Error answers echo the request's record.
//
// # The data path
//
// PostSend encodes the packet into a pooled frame on the device's loop and
// queues it; a bottom half on the fabric's loop takes it (the send
// completes then), writes it to the capture, runs the fault injector and
// walks it through the switches' forwarding tables. The fabric puts a few
// frames on the wire per pass and lets the receivers' completion
// handlers run before the next few, so hosts drain their receive queues
// while the fabric fills them, as hosts with CPUs of their own do (see
// fabricBatch in deliver.go). Multicast follows the
// group's tree; switches never send a packet back where it came from. A
// host's HCA loops multicast back to the QPs on the sending port that are
// attached to the group, the sending QP included, as real HCAs do by
// default: IPoIB must recognise its own broadcasts (source QPN and SLID are
// its own) and drop them. A packet for the sender's own LID turns around in
// the HCA.
//
// Every frame carries both CRCs, so captures hold real ones: the sending
// port leaves them zero (ib.Packet.AppendToLeavingCRCs), and they are
// filled in the first time anything reads the whole frame (a capture, a
// check), as HCAs and switches compute them in hardware. The receiving port
// decodes the frame with ib.DecodePacket, both CRCs checked, when the
// frame came from outside a port's encoder (a test injecting raw bytes);
// a frame a port encoded and the fabric carried untouched is decoded with
// ib.DecodeSealedPacket, which makes every check but recomputing CRCs
// that cannot be wrong: an HCA does that in hardware, and in software it
// was a fifth of a TCP stream's CPU. It then checks its state, the DLID, the P_Key against its table and,
// for a UD QP, against the QP's own partition (IBA 10.9.3), then the Q_Key
// (IBA 10.2.4; a controlled Q_Key in a send request is replaced by the
// QP's own at the sender), then the receive buffer. The GRH, if any, lands
// in the buffer's first 40 bytes and the payload after it. Every discard is
// counted by reason (DropReason) on the fabric and on the host.
//
// Payloads larger than the sending port's active MTU complete with
// ib.StatusLocalLength; packets larger than a link's MTU on the route are
// dropped there (DropOversize).
//
// # Loops and locks
//
// The fabric and everything that changes its topology or state (AddHost,
// Connect, Start, SetLinkUp, SetSMUp, SetFaults, ReassignLID,
// FailDevices) run on the fabric's loop. A device may be opened on
// another loop: its control methods (control.go) and I/O methods (io.go)
// run there. The two meet in a few mutex-protected places: the frame
// queue into the fabric, each completion queue (filled by the fabric
// loop, drained by Poll, with a bottom half on the CQ's loop to run the
// handler), each QP's receive ring, each MAD port's receive ring, the
// port attributes and QP table of a host, and each device's event queue.
// Counters are atomic. The fabric loop may run on an aio.ManualClock,
// which makes delays deterministic.
//
// # Faults
//
// SetFaults sets loss, duplication, reordering and delay with jitter,
// drawn per flow (sending port and DLID) from generators seeded by
// Config.Seed, so a flow's n-th packet meets the same fate however the
// hosts interleave. SetLinkUp takes links down
// and up (ib.EventPortDown, ib.EventPortActive). SetSMUp stops the SM (the
// SA goes silent, the switches keep their tables) and restarts it (a new
// sweep, ib.EventSMChange and ib.EventClientReregister on every active
// port; the groups are forgotten unless Config.KeepGroupsOnSMRestart).
// Host.ReassignLID moves a port to a new LID with ib.EventLIDChange.
// Host.FailDevices fails the devices open on a host as a whole, as an HCA
// reporting a fatal error does: ib.EventPortDown on every port, then
// ib.EventDeviceFatal, and nothing works on them but Close; a device
// opened on the host afterwards works, as after a reset.
//
// # Capture
//
// With Config.Capture set, every packet a port transmits is written once,
// when the fabric takes it and before any fault, to an ERF pcap (link type
// 197, ERF type 21) that Wireshark and tshark decode, SA MADs included.
// Packets the HCA turns around without using the link are not written.
//
// # What is not simulated
//
// Subnet management packets (QP0) are not carried: the SM programs ports
// directly. There is one data VL, LMC is 0, StaticRate is not enforced,
// and there is no RC, UC or RDMA: UD SEND is the only operation.
package sim
