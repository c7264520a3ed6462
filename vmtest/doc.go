// Package vmtest runs code against real kernel RDMA inside small qemu
// virtual machines. The project's machines have no RDMA in their kernel
// (libibverbs fails with ENOSYS), so the verbs driver is tested on
// soft-RoCE (rdma_rxe) in a VM booted from Debian's own kernel package.
//
// # What a run does
//
//  1. KernelPackage asks apt which versioned package linux-image-amd64
//     names (linux-image-6.1.0-*-amd64 on Debian 12); FetchKernel fetches
//     it with apt-get download into CacheDir ($IPOIBD_VMTEST_CACHE, else
//     the user cache folder), unpacks it with dpkg-deb -x and runs
//     depmod -b, since the package ships no modules.dep. Nothing is
//     installed on the host, and later runs reuse the unpacked tree.
//  2. BuildImage assembles one initramfs in memory (Archive writes the
//     kernel's newc cpio format): the host's merged-/usr layout,
//     busybox-static, iproute2's ip and rdma, ibv_devinfo, the rxe
//     provider with its .driver file, every shared library these and the
//     guest binaries need (found with ldd), the kernel modules with their
//     dependencies in load order (virtio PCI and net, crc32_generic before
//     rdma_rxe, ib_uverbs, ib_umad, 9p, virtio-rng), and the PID-1 script.
//  3. Run boots one qemu per VM under TCG (1 vCPU, DefaultMemoryMB,
//     -nographic -no-reboot, serial console to a file, the host's Share
//     folder over 9p at /share, a virtio NIC). KVM is not used: on this
//     machine kind /dev/kvm hangs the stock kernel. The PID-1 script mounts
//     the pseudo file systems, loads the modules, brings eth0 up with
//     10.77.0.<index+1>/24, runs "rdma link add rxe0 type rxe netdev eth0"
//     (iproute2's ip called by its full path, because busybox's sh would
//     run its own ip applet), waits for the link-local address, raises the memlock
//     limit, runs the VM's Script, prints VMTEST-EXIT=<status> and powers
//     off.
//  4. Run waits for every VM (or kills them at Config.Timeout), reads the
//     serial logs and reports each VM's exit status; tests fail with the
//     log tail.
//
// The VMs of one Run share a private Ethernet: each qemu's socket netdev
// talks UDP to a small hub in the test process, which floods every frame
// to the other VMs. Any number of VMs can be joined this way. Booting to
// rxe0 ACTIVE takes about 4 s under TCG; the one-VM verbs test takes about
// 12 s and the two-VM one about 11 s, plus building the test binary.
//
// # The tests here
//
// TestVerbsOneVM builds ib/verbs' test binary with go test -c and runs it
// in one VM with IPOIBD_VERBS_DEVICE=rxe0; TestVerbsTwoVMs runs its
// TestPeer in two VMs, which find each other through the IPoIB broadcast
// group and answer by unicast. TestIPoIBDTwoVMs (ipoibd_test.go) runs the
// real daemon in two VMs: ibv_ud_pingpong first as the verbs baseline,
// then "ipoibd up" with a DHCP server in vm0 and "ipoibd up --dhcp" in
// vm1, "ipoibd ping" both ways, a TCP transfer between two more IPoIB
// interfaces brought up by vmtest/cmd/vmxfer (checked byte for byte), and
// vm0's capture copied out through the share and opened in tshark. The VMs
// meet through marker files in the share; the test logs the ping RTT, the
// ud_pingpong RTT, their ratio and the TCP throughput on a BENCH line
// (docs/performance.md). It takes 25-50 s, the whole package about a
// minute. They skip, saying why, when qemu, busybox,
// iproute2, the rxe provider or the kernel package is unavailable (.ci/run
// installs the packages), under -short, or with IPOIBD_VMTEST=0.
//
// TestUDPInteropTwoVMs (udp_test.go) checks the udp driver (ib/udp,
// RoCE v2 on UDP sockets) against the kernel: vm0 runs ipoibd over rxe0,
// vm1 boots with VM.NoRDMA (no InfiniBand module, no rxe0) and runs
// ipoibd over udp:eth0; a DHCP lease, pings both ways and a byte-checked
// TCP stream cross between them, and Config.WireCapture has the hub write
// every frame between the VMs to a pcap, in which every RoCE v2 datagram
// must carry a valid ICRC and rxe's broadcast-group datagrams must go to
// the MGID as an IPv6 address.
//
// TestTwoVMTUN (tun_test.go) checks "ipoibd up --tun" on soft-RoCE (the
// VMs also load the tun module): vm1's kernel, through the TUN interface
// ipoib0 and its daemon, reaches vm0's daemon with busybox's ping and
// with a TCP stream (vmxfer -kernel -source) that vm0's "--serve"
// hands to a kernel sink (vmxfer -kernel -sink), byte for byte; the same
// transfer between two interfaces of the Go API follows in the same boot,
// and a BENCH line logs both figures and their ratio. About 40 s.
//
// BenchmarkPingVsUDPingpong (bench_test.go) times `ipoibd ping` against
// ibv_ud_pingpong in one boot, with one and two vCPUs per VM, and reports
// their ratio. BenchmarkPingBreakdown (breakdown_test.go) splits both
// round trips into the sender's span, the responder's and the wire's,
// from two kernel trace events (net_dev_xmit, netif_receive_skb) that
// each guest records on its own clock, so the split needs no clock
// common to the VMs. BenchmarkPingTurns (turns_test.go), when
// IPOIBD_VMTEST_TURNS names two or more variants (settings of the
// daemon's environment, or another build of it), restarts both daemons
// with each variant in turn within one boot and reports each one's median
// round trip and its ratio to the first: a change worth a tenth is lost
// in the scatter between boots but not within one.
//
// # Adding a test
//
// Build the binaries the guests run into a folder, then call Run with that
// folder as Share, the binaries in Binaries (for their libraries) and one
// VM per guest, each with the shell Script it runs; VMTEST_INDEX,
// VMTEST_NAME and VMTEST_IP are set for it. For example, a two-VM ipoibd
// test would put the ipoibd binary in the share and give each VM a script
// that runs "ipoibd up" and then DHCP, ping or a TCP transfer against the
// other's address, exiting non-zero on failure.
package vmtest
