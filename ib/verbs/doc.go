// Package verbs is ipoibd's driver for real RDMA devices: InfiniBand HCAs
// and RoCE NICs, soft-RoCE (rdma_rxe) included, through libibverbs and
// libibumad over cgo. It registers itself in the ib driver table as
// "verbs"; the layers above reach it only through ib.Driver, ib.Device and
// the interfaces of ib/io.go and ib/control.go, exactly as they reach the
// simulator.
//
// # Building and loading
//
// The project must build and run its simulator on any Linux machine with
// Go, with or without gcc and the rdma-core headers, and one binary must
// start whether or not the machine it runs on has libibverbs. So:
//
//   - With cgo (the default where gcc exists), the C side (shim.c) is
//     compiled against <infiniband/verbs.h> and <infiniband/umad.h> when
//     they are installed (libibverbs-dev, libibumad-dev), found with
//     __has_include. It does not link libibverbs or libibumad: it loads
//     libibverbs.so.1 with dlopen on first use, and libibumad.so.3 on the
//     first MAD port, and calls their exported functions through pointers
//     resolved once. The fast-path calls (ibv_poll_cq, ibv_post_send,
//     ibv_post_recv, ibv_req_notify_cq) are the header's static inline
//     dispatches through the provider's ops table, exactly as when
//     linked, so the data path is unchanged: one cgo call per batch.
//   - With cgo but without those headers, shim.c compiles to stubs; the
//     Go side never names an rdma-core type (shim.h declares the verbs
//     objects as incomplete structs and flattens what Go reads), so the
//     package still compiles.
//   - Without cgo (CGO_ENABLED=0, the noverbs tag, another OS) nocgo.go
//     registers the driver in its place.
//
// In every case the driver stays in the table. When it cannot run,
// Probe and Open return an error wrapping ib.ErrUnavailable that names
// the cause and the fix: not built in, built without the rdma-core
// headers, or libibverbs.so.1 missing (a kernel without RDMA is
// ib.ErrNoRDMA, as below). Probe then still lists the devices sysfs shows
// (through github.com/Mellanox/rdmamap), so "ipoibd devices" tells a
// machine with hardware but no usable driver from one without hardware.
//
// Why dlopen rather than a build tag or linking: a build tag cannot see
// whether headers are installed, so the README's "go run ./cmd/ipoibd
// sim" would fail to compile on a machine with gcc but no rdma-core; and
// a linked binary does not start at all where libibverbs.so.1 is
// missing, simulator included. The cost is that the shim resolves about
// thirty symbols by name, each checked at load time; a library too old to
// have one fails the load with that name.
//
// Running it needs libibverbs1 (libibumad3 for InfiniBand MAD ports) and
// the provider of the device (Debian ibverbs-providers; for soft-RoCE
// librxe-rdmav34.so and /etc/libibverbs.d/rxe.driver).
//
// # What it does
//
// Probe lists every device with its ports: state, link layer, LID, SM LID
// and SL, LMC, active and maximum MTU, rate, the GID table (one
// ibv_query_gid_table call) and the P_Key table. On a kernel without RDMA
// support libibverbs fails with ENOSYS, and Probe returns an error
// wrapping ib.ErrNoRDMA ("this kernel has no RDMA support") rather than
// an empty list; so does Open.
//
// Open gives an ib.Device bound to an aio loop:
//
//   - Port events. The device's async-event fd is non-blocking and
//     watched by the loop; each event is read, acknowledged at once and
//     mapped to an ib.Event (port active, port error as port down, LID,
//     P_Key, SM, GID change, client reregister; a fatal device error
//     becomes port down on every port).
//   - Completion queues. Each CQ has its own completion channel whose fd
//     the loop watches. When it fires the driver runs the CQ's handler,
//     which polls until the CQ is empty, so the completion that raised
//     the event is handled first; then a bottom half, which runs after
//     any the handler scheduled (the stack's transmit of an answer), takes
//     the event, acknowledges it and re-arms notification in one cgo
//     call, and runs the handler once more, which finds any completion
//     that landed before the re-arm; one that lands after it raises a
//     fresh event, so none is stranded. A CQ set to ib.ArmOnDemand is
//     armed only by RequestNotify (ibv_req_notify_cq), once per call:
//     its event is taken and acknowledged, and nothing re-arms it. Poll
//     fetches up to 64 completions per cgo call.
//   - UD queue pairs, moved RESET→INIT→RTR→RTS with the P_Key index and
//     Q_Key asked for (SetQKey is a modify in RTS). Receive buffers are
//     one mmap'd slab outside the Go heap, registered once with
//     ibv_reg_mr and posted in batches; a completion lends a buffer out
//     until RepostRecv. Sends are copied into 4096-byte slots of a second
//     registered slab, posted as one chain per PostSend, and a slot is
//     free again when its completion is polled. Work request IDs carry a
//     QP handle, the kind (send or receive) and the slot or buffer
//     number, so no Go pointer passes through C.
//   - Address handles (ibv_create_ah), with a GRH when GlobalRoute is set,
//     the destination is multicast, or the port is Ethernet.
//   - Multicast: AttachMcast and DetachMcast (ibv_attach_mcast).
//   - MAD ports (OpenMADPort), for the SA client, on InfiniBand ports
//     only: a libibumad agent of the SA class whose file descriptor the
//     loop watches. The kernel replaces the high 32 bits of a request's
//     transaction ID with the agent's own before it goes out and sends
//     the reply back with that rewritten TID; the port remembers recent
//     requests and puts the caller's TID back on their replies, so the SA
//     client matches what it sent. Every MAD goes through libibumad's
//     umad_send and umad_recv (and libc's poll), never Go's own system
//     calls, so ibsim's libumad2sim, preloaded in front of libc, can stand
//     in for the kernel: there the "file descriptor" is not a kernel one,
//     and a reader goroutine waits in poll instead of the loop (umad.go).
//     The package-level OpenMADPort and QueryUMADPort open a port's SA
//     agent and read its attributes without a verbs device, which is all
//     an ibsim HCA has (smtest runs OpenSM on ibsim with them).
//
// # InfiniBand and RoCE
//
// On an InfiniBand port a subnet manager assigns LIDs, the SA answers
// PathRecord and MCMemberRecord queries, and multicast groups must be
// joined through the SA before the switches forward them. On an Ethernet
// (RoCE) port none of that exists: the LID is 0, every packet carries a
// GRH whose GIDs are IP addresses, paths resolve locally and a multicast
// group is attached without a join. The driver reflects this:
//
//   - OpenMADPort on a RoCE port fails with ErrNoSA.
//   - CreateAH on a RoCE port always sets the GRH, ignores the DLID, and
//     fills a zero hop limit (64 for unicast, 1 for multicast). A
//     multicast destination is sent from the port's link-local GID (index
//     0 on rxe) when the caller picked an IPv4-mapped one: RoCE v2 sends a
//     multicast GID as IPv6, and rdma_rxe silently drops such a send with
//     an IPv4 source.
//   - AttachMcast on a RoCE port also joins the group at IP level
//     (IPV6_JOIN_GROUP on the port's network interface, found through the
//     GID table's ifindex); DetachMcast leaves it with the last QP. The
//     Linux 6.1 rdma_rxe does not do this itself, and without it the NIC
//     and the IPv6 input path drop the group's packets.
//   - A UD receive buffer's 40-byte GRH area holds, on RoCE v2, the IPv6
//     header of the packet, or for IPv4 20 zero bytes and the IPv4 header.
//
// # Running it
//
// On a real HCA: load the kernel's RDMA stack (ib_uverbs, ib_umad and the
// HCA driver, which distributions do at boot), make sure a subnet manager
// runs on the fabric for InfiniBand ports, and list the devices with
// "ipoibd devices". On a machine without RDMA hardware, soft-RoCE turns
// any Ethernet interface into a RoCE device:
//
//	modprobe rdma_rxe
//	rdma link add rxe0 type rxe netdev eth0
//
// after which rxe0 is ACTIVE at once, with link layer Ethernet, LID 0 and
// GIDs fe80::<EUI-64> and ::ffff:<IPv4>; its active MTU follows the
// interface's (1500 gives 1024, 2200 gives 2048, 4200 and up 4096). The
// vmtest package runs exactly this inside qemu, because the project's own
// machines have no RDMA in their kernel.
//
// Privileges: the process needs read and write access to
// /dev/infiniband/uverbs* (and /dev/infiniband/umad* for MAD ports; the
// rdma group on most distributions), and a locked-memory limit (ulimit -l,
// RLIMIT_MEMLOCK) large enough for every QP's slabs, since ibv_reg_mr pins
// them: receive depth × buffer size plus send depth × 4096 bytes per QP.
// A failing ibv_reg_mr says so in its error. Joining the IP-level group
// needs no privilege.
//
// # Cgo rules
//
// No Go pointer is stored in C memory or kept by C after a call returns.
// The C helpers (shim.c) turn loops into single calls: a batch of polls,
// a chain of sends or receives, draining a completion channel, walking a
// QP to RTS; the data-path ones are declared noescape and nocallback, so
// their arguments stay where they are and the calls are cheap. What
// allocates: Probe, Open and every control call (descriptors, slabs,
// error values); on the data path only error returns (the error value)
// and the completions the driver makes itself (flushes on QP Close,
// oversized sends), which are appended to a slice that stops growing once
// warm.
//
// # Tests
//
// The host tests check the pure parts (work request IDs, rate and status
// mapping, the user-MAD header against golden vectors and the C layout,
// TID restoring, a fuzz target) and that Probe reports ib.ErrNoRDMA on a
// kernel without RDMA; the sysfs tests read a made-up class directory;
// and where the driver cannot run, that Probe says so and lists sysfs.
// cmd/ipoibd's TestBuildWithoutRDMA builds the binary without the
// rdma-core headers and with CGO_ENABLED=0 and runs it, and
// TestVerbsWithoutLibibverbs runs it where libibverbs.so.1 cannot load. The device tests
// run where IPOIBD_VERBS_DEVICE
// names a device; go test ./vmtest builds this package's test binary and
// runs it against rxe0 in one qemu VM, and TestPeer between two.
package verbs
