// Package rocetest checks RoCEv2 traffic in Ethernet captures: every
// datagram to UDP port 4791 must carry a valid ICRC. The network-namespace
// and VM tests use it on captures taken on the wire, where nothing of
// ours decoded or re-encoded the bytes.
//
// It is test support only; nothing outside _test.go files imports it.
package rocetest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
)

// Ethernet framing (IEEE 802.3): header length and EtherTypes.
const (
	ethHeaderLen = 14
	etherTypeIP4 = 0x0800
	etherTypeIP6 = 0x86DD
)

// Summary counts what Check found.
type Summary struct {
	// Packets is the number of RoCEv2 datagrams (UDP to port 4791).
	Packets int
	// IPv4 and IPv6 split Packets by family.
	IPv4, IPv6 int
	// Multicast counts datagrams to a multicast address.
	Multicast int
	// UD counts UD SEND Only datagrams.
	UD int
	// BadICRC lists the datagrams whose ICRC does not match, by frame
	// number (from 1) and reason.
	BadICRC []string
	// McastDsts counts the multicast destinations, as IP addresses.
	McastDsts map[netip.Addr]int
}

// Check verifies the ICRC of every RoCEv2 datagram in frames (Ethernet
// frames, as a pcap of link type 1 holds them).
func Check(frames [][]byte) Summary {
	s := Summary{McastDsts: map[netip.Addr]int{}}
	for i, fr := range frames {
		if len(fr) < ethHeaderLen+1 {
			continue
		}
		ip := fr[ethHeaderLen:]
		var udp, end int
		var dst netip.Addr
		switch binary.BigEndian.Uint16(fr[12:]) {
		case etherTypeIP4:
			if len(ip) < ib.IPv4HeaderLen+ib.UDPHeaderLen || ip[9] != 17 || ip[0] != 0x45 {
				continue
			}
			udp, end = ib.IPv4HeaderLen, int(binary.BigEndian.Uint16(ip[2:]))
			dst = netip.AddrFrom4([4]byte(ip[16:20]))
		case etherTypeIP6:
			if len(ip) < ib.IPv6HeaderLen+ib.UDPHeaderLen || ip[6] != 17 {
				continue
			}
			udp, end = ib.IPv6HeaderLen, ib.IPv6HeaderLen+int(binary.BigEndian.Uint16(ip[4:]))
			dst = netip.AddrFrom16([16]byte(ip[24:40]))
		default:
			continue
		}
		if binary.BigEndian.Uint16(ip[udp+2:]) != ib.RoCEv2Port {
			continue
		}
		s.Packets++
		if dst.Is4() {
			s.IPv4++
		} else {
			s.IPv6++
		}
		if dst.IsMulticast() {
			s.Multicast++
			s.McastDsts[dst]++
		}
		if end > len(ip) || end < udp+ib.UDPHeaderLen+ib.BTHLen+ib.ICRCLen {
			s.BadICRC = append(s.BadICRC, fmt.Sprintf("frame %d: truncated (%d of %d bytes)", i+1, len(ip), end))
			continue
		}
		if ib.Opcode(ip[udp+ib.UDPHeaderLen]) == ib.OpUDSendOnly {
			s.UD++
		}
		want := binary.LittleEndian.Uint32(ip[end-ib.ICRCLen:])
		got, err := ib.ICRCRoCEv2(ip[:end-ib.ICRCLen])
		if err != nil || got != want {
			s.BadICRC = append(s.BadICRC, fmt.Sprintf("frame %d: ICRC on the wire %#08x, computed %#08x (%v)", i+1, want, got, err))
		}
	}
	return s
}

// Tshark opens a capture in tshark and returns how many frames carry
// each protocol stack (frame.protocols); every malformed frame fails tb.
// ok is false when tshark is not installed.
func Tshark(tb testing.TB, path string) (stacks map[string]int, ok bool) {
	tb.Helper()
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		tb.Log("tshark not installed: the capture is not opened")
		return nil, false
	}
	out, err := exec.Command(tshark, "-r", path, "-T", "fields", "-e", "frame.protocols", "-e", "_ws.malformed").Output()
	if err != nil {
		tb.Fatalf("tshark -r %s: %v\n%s", path, err, out)
	}
	stacks = map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) > 1 && f[1] != "" {
			tb.Errorf("tshark finds a malformed frame: %q", line)
		}
		stacks[f[0]]++
	}
	return stacks, true
}
