// Package smtest runs ipoibd's InfiniBand control plane against a real
// subnet manager: OpenSM on an ibsim fabric.
//
// ibsim (Debian package ibsim-utils) simulates an InfiniBand subnet for
// management datagrams only: switches, HCAs and their subnet management
// agents. OpenSM attaches to one of its HCAs through libumad2sim, a
// library preloaded in front of libc that turns libibumad's umad files
// into a connection to ibsim. ipoibd's verbs driver does all its MAD I/O
// through libibumad's C calls (ib/verbs, umad.go), so a process started
// with libumad2sim preloaded and SIM_HOST naming an HCA talks to OpenSM's
// SA exactly as it would on hardware.
//
// ibsim carries no data: its HCAs have no verbs and no queue pairs. The
// tests join the two planes with a SplitDevice: an ib.Device whose data
// plane is a simulator host (package sim) built with the ibsim HCA's port
// GUID, LID and P_Key table, and whose control plane (the MAD port, the
// port's LID, SM, state and P_Keys, and port events) is the ibsim HCA.
// ipoib's driver runs unchanged on top: it joins OpenSM's broadcast group,
// attaches its simulator queue pair to the group OpenSM made and comes up.
//
// The tests run in two processes. The test process starts ibsim and the
// OpenSMs, runs saquery and smpquery (infiniband-diags) for the reference
// answers and drives ibsim's console; the control plane under test runs in
// a child, the same test binary started with libumad2sim preloaded (a
// preload has to be in place when a process starts), which takes one
// command per line on stdin and answers one JSON line on stdout.
//
// The tests, each against OpenSM 3.3.23 on testdata/fabric.net, each
// compared with saquery (and smpquery for the port):
//
//   - TestBroadcastJoinMatchesOpenSM: the link joins the broadcast group
//     OpenSM made, with its MLID, Q_Key, MTU, rate, SL and P_Key, and
//     OpenSM lists the port as a member.
//   - TestPartitionJoin: P_Key 0x8001 from partitions.conf, with its own
//     Q_Key, MTU and rate; a join for a partition the port is not in is
//     refused with the SA's status, in one line.
//   - TestMulticastCreateLeave: an IPv4 group created by a join, seen in
//     saquery, left with a Delete and gone.
//   - TestPathRecordsMatchSaquery: the paths to the three other HCAs, from
//     the SA client and from ipoib's own resolution of a packet's peer.
//   - TestLinkDownUpRejoins: ibsim's console takes the link down and up;
//     the normal flush (group left, paths forgotten), rejoin, membership
//     again at OpenSM, the peer's path asked anew.
//   - TestSMFailover: the master OpenSM is killed, the standby takes over;
//     rejoin and paths from the new master, no restart.
//   - TestLIDChange: OpenSM restarted with a guid2lid file that moves the
//     port; rejoin, paths from the new LID.
//   - TestSimAnswersAsOpenSM: the simulator's SA against OpenSM's, field
//     by field (docs/protocol.md lists what differs and why).
//   - TestIBSimPortMatchesSMA, TestTwoHostsEndToEnd: two HCAs from one
//     process over ibsim's own protocol, and IPoIB frames between them.
//   - TestRealFabricSM: the join, multicast and path checks against a real
//     fabric's SM when IPOIBD_SMTEST_CA names an HCA (docs/hardware.md).
//
// Port events: libumad2sim writes the port's attributes once and has no
// event channel, so after each change the harness reads the port's
// PortInfo with smpquery and raises, through SplitDevice.PortChanged, the
// event the kernel raises for that change on hardware.
//
// Two hosts end to end (TestTwoHostsEndToEnd). libumad2sim attaches a
// process to one HCA, so this test does without it: IBSimPort speaks
// ibsim's socket protocol itself (a control socket to attach to a node
// and read its NodeInfo, PortInfo and P_Keys; one datagram per MAD), so
// one process holds ports on several HCAs. Each HCA gets a SplitDevice
// whose data plane is a host of one simulator fabric built with the
// HCA's port GUID, OpenSM's LID and the P_Key table; ipoib runs on each,
// joins the broadcast group at OpenSM and resolves its peer's path
// there, and the simulator carries the frames. One bridge is needed: the
// simulator's switches forward multicast along trees its own SM builds
// from joins to its own SA, so each host also joins the group there (a
// shadow join), and the test checks that the simulator's SA (with
// sim.Config.IPoIBPartitions, as OpenSM makes the group at start) hands
// out OpenSM's MLID and Q_Key. A broadcast and a unicast frame then go
// from Hca2 to Hca4. SplitDevice and IBSimPort are exported for the same
// use outside the tests: ipoibd's control plane against an OpenSM (or an
// ibsim topology taken from a real fabric with ibnetdiscover) with the
// simulator as the wire.
//
// Without ibsim, OpenSM or infiniband-diags every test skips, naming the
// packages to install; ./test.sh says so before the run.
//
// A run killed before its cleanups (a -timeout panic, ^C, SIGKILL) takes
// its processes with it: each is started with SIGKILL as its parent-death
// signal. Its directory, named ipoibd-smtest-<pid>-* in the temporary
// directory, is removed by the next run once that PID has ended
// (TestKilledRunLeavesNothing).
package smtest
