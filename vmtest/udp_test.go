package vmtest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/pcaptest"
	"github.com/ipoibd/ipoibd/internal/rocetest"
	"github.com/ipoibd/ipoibd/ipoib"
)

// The kernel-interop test of the udp driver: vm0 runs ipoibd over
// soft-RoCE (rdma_rxe, the verbs driver), vm1 runs ipoibd over the udp
// driver on its plain eth0 with no RDMA module loaded at all. Between
// them: a DHCP lease, pings both ways, a byte-identical TCP stream, and a
// capture taken on the wire (the hub between the VMs) in which every
// RoCEv2 datagram, the kernel's and ours, has a valid ICRC. The daemons
// use GID index 0 on both sides (the link-local GID: unicast is IPv6),
// the TCP interfaces GID index 1 (the IPv4-mapped GID: unicast is IPv4,
// whose ICRC covers the IP identification each kernel picks).

// udpVM0Script: rxe side, DHCP server, TCP sink.
var udpVM0Script = vmScriptCommon + fmt.Sprintf(`
echo "STEP ipoibd up over rxe0 (server)"
upready rxe0 --addr %[1]s/24 --dhcp-server %[2]s
leaseserver 90 %[3]d %[4]s -device rxe0 -gid-index 1 -addr %[5]s/24 -bytes %[6]d
echo "STEP done"
`, vmServerAddr, vmDHCPRange, vmPingCount, vmPingInterval, vmXferSink, vmXferBytes)

// udpVM1Script: no RDMA stack; the udp driver on eth0, DHCP client, TCP
// source.
var udpVM1Script = vmScriptCommon + fmt.Sprintf(`
echo "STEP no RDMA in this VM"
grep -q rdma_rxe /proc/modules && fail "rdma_rxe is loaded"
[ -e /sys/class/infiniband ] && ls /sys/class/infiniband | grep -q . && fail "an RDMA device exists"
$S/ipoibd devices 2>&1 | grep -v "^ipoibd devices: driver verbs"
waitfor $S/vm0.up 90
echo "STEP ipoibd up --device udp:eth0 --dhcp"
upleased udp:eth0
leaseclient 90 %[1]s %[2]d %[3]s -device udp:eth0 -gid-index 1 -addr %[4]s/24 -source %[5]s -bytes %[6]d
echo "STEP done"
`, vmServerAddr, vmPingCount, vmPingInterval, vmXferSource, vmXferSink, vmXferBytes)

// TestUDPInteropTwoVMs runs ipoibd over kernel soft-RoCE in vm0 and over
// the udp driver in vm1 (no RDMA modules), and checks they interoperate:
// lease, pings both ways, a byte-identical TCP stream, and a clean wire.
func TestUDPInteropTwoVMs(t *testing.T) {
	k := vmKernel(t)
	share, bins := ipoibdShare(t)
	wire := filepath.Join(t.TempDir(), "wire.pcap")
	start := time.Now()
	res := runVMs(t, Config{Kernel: k, Share: share, Binaries: bins, WorkDir: t.TempDir(), Timeout: 4 * time.Minute, WireCapture: wire},
		[]VM{{Name: "vm0", Script: udpVM0Script}, {Name: "vm1", Script: udpVM1Script, NoRDMA: true}})
	if t.Failed() {
		return
	}
	t.Logf("two-VM rxe/udp run: %v", time.Since(start).Round(time.Millisecond))
	if !bytes.Contains(res[1].Log, []byte("udp:eth0")) {
		t.Errorf("ipoibd devices in vm1 does not list udp:eth0:\n%s", res[1].Tail(3000))
	}

	pings := checkLeaseAndPings(t, share)
	if sink := checkXfer(t, res); sink != nil {
		t.Logf("BENCH rxe<->udp ping-p50-us vm0->vm1=%.0f vm1->vm0=%.0f | tcp udp->rxe %s bytes in %s ms = %s Mbit/s",
			pings["vm0"].P50Ms*1000, pings["vm1"].P50Ms*1000, sink[2], sink[5], sink[6])
	}
	checkInteropWire(t, wire)
}

// checkInteropWire checks the capture taken between the VMs: every RoCEv2
// datagram has a valid ICRC, both sides sent UD datagrams, and rxe sent
// the IPoIB broadcast group as IPv6 to the MGID itself, on the Ethernet
// multicast address 33:33 + its last four bytes: the mapping the udp
// driver follows.
func checkInteropWire(t *testing.T, path string) {
	t.Helper()
	frames := pcaptest.Read(t, path, layers.LinkTypeEthernet)
	s := rocetest.Check(frames)
	t.Logf("on the wire: %d RoCEv2 datagrams (%d IPv4, %d IPv6, %d multicast to %v, %d UD), %d bad ICRCs",
		s.Packets, s.IPv4, s.IPv6, s.Multicast, s.McastDsts, s.UD, len(s.BadICRC))
	for _, b := range s.BadICRC {
		t.Error(b)
	}
	bcast := ipoib.BroadcastGID(ib.PKeyDefault)
	var fromVM [2]int
	var rxeBcast int
	for _, fr := range frames {
		if len(fr) < 14+40+8+12 || binary.BigEndian.Uint16(fr[12:]) != 0x86DD || fr[14+6] != 17 ||
			binary.BigEndian.Uint16(fr[14+40+2:]) != ib.RoCEv2Port {
			continue
		}
		vm := int(fr[11]) - 1 // guestMAC: 52:54:00:77:00:<index+1>
		if vm < 0 || vm > 1 {
			continue
		}
		fromVM[vm]++
		dst := netip.AddrFrom16([16]byte(fr[14+24 : 14+40]))
		if vm == 0 && dst == netip.AddrFrom16(bcast) {
			rxeBcast++
			wantMAC := []byte{0x33, 0x33, bcast[12], bcast[13], bcast[14], bcast[15]}
			if !bytes.Equal(fr[:6], wantMAC) {
				t.Errorf("rxe sent the broadcast group to MAC % x, want % x", fr[:6], wantMAC)
			}
			if qp := binary.BigEndian.Uint32(fr[14+48+4:]) & 0xFFFFFF; qp != uint32(ib.QPNMulticast) {
				t.Errorf("rxe's broadcast datagram to QPN %#x", qp)
			}
		}
	}
	t.Logf("IPv6 RoCEv2 frames from vm0 (rxe) %d, from vm1 (udp) %d; rxe to %v: %d", fromVM[0], fromVM[1], netip.AddrFrom16(bcast), rxeBcast)
	if s.IPv4 == 0 {
		t.Error("no IPv4 RoCEv2 datagram on the wire (the TCP interfaces use IPv4-mapped GIDs)")
	}
	if fromVM[0] == 0 || fromVM[1] == 0 || rxeBcast == 0 {
		t.Error("the capture lacks RoCEv2 from one side, or rxe's IPv6 datagrams to the broadcast MGID")
	}
	if stacks, ok := rocetest.Tshark(t, path); ok {
		t.Logf("tshark: %v", stacks)
	}
}
