package ib

import (
	"fmt"
	"hash/crc32"
)

// RoCEv2 (IBA Annex A17) carries the IBA transport headers in UDP: an
// IPv4 or IPv6 header takes the place of LRH and GRH, a UDP header follows,
// then BTH, extended headers, payload, pad and ICRC. There is no VCRC: the
// Ethernet FCS does its job.

// RoCEv2 constants (IBA Annex A17.2 and A17.4).
const (
	// RoCEv2Port is the UDP destination port of every RoCEv2 packet
	// (IANA "roce", 4791).
	RoCEv2Port = 4791
	// IPv4HeaderLen is the size of an IPv4 header without options, the
	// only kind a RoCEv2 packet carries.
	IPv4HeaderLen = 20
	// IPv6HeaderLen is the size of the fixed IPv6 header.
	IPv6HeaderLen = 40
	// UDPHeaderLen is the size of the UDP header.
	UDPHeaderLen = 8
)

// Offsets of the variant fields of the IP and UDP headers, which the
// RoCEv2 ICRC counts as all ones (IBA Annex A17.4.1: routers rewrite them).
const (
	ipv4TOSOff      = 1
	ipv4TTLOff      = 8
	ipv4ChecksumOff = 10
	// The IPv6 traffic class and flow label span the low nibble of byte 0
	// through byte 3; the hop limit is byte 7.
	ipv6HopLimitOff = 7
	udpChecksumOff  = 6
)

// ICRCRoCEv2 returns the Invariant CRC of a RoCEv2 packet. b runs from the
// first byte of the IPv4 or IPv6 header (the version nibble says which) up
// to, not including, the ICRC: IP header, UDP header, BTH, extended
// transport headers, payload and pad. The CRC is the one ICRC computes,
// over 8 bytes of ones standing in for the LRH, then the IP header with
// its variant fields read as ones (IPv4: type of service, TTL and header
// checksum; IPv6: traffic class, flow label and hop limit), the UDP header
// with its checksum read as ones, the BTH with its reserved byte 4 read as
// ones, and the rest as it is. The IPv4 identification field is covered,
// so a sender must know the ID the packet leaves with.
//
// An IPv4 header with options (IHL > 5) is refused with ErrLength, as are
// packets shorter than the headers (ErrTruncated).
func ICRCRoCEv2(b []byte) (uint32, error) {
	if len(b) < 1 {
		return 0, fmt.Errorf("RoCEv2 ICRC: empty packet: %w", ErrTruncated)
	}
	var crc uint32
	var udp int
	switch b[0] >> 4 {
	case 4:
		udp = IPv4HeaderLen
		if len(b) < udp+UDPHeaderLen+BTHLen {
			return 0, fmt.Errorf("RoCEv2 ICRC: IPv4 packet %d bytes, need %d for IP, UDP and BTH: %w",
				len(b), udp+UDPHeaderLen+BTHLen, ErrTruncated)
		}
		if b[0]&0xF != IPv4HeaderLen/4 {
			return 0, fmt.Errorf("RoCEv2 ICRC: IPv4 header length %d words, RoCEv2 uses 5: %w", b[0]&0xF, ErrLength)
		}
		crc = icrcByte(icrcAfterOnes, b[0])
		crc = icrcByte(crc, 0xFF) // type of service
		crc = icrcBytes(crc, b[2:ipv4ChecksumOff], ipv4TTLOff-2)
		crc = icrcBytes(crc, []byte{0xFF, 0xFF}, -1)
		crc = crc32.Update(crc, crc32.IEEETable, b[ipv4ChecksumOff+2:udp])
	case 6:
		udp = IPv6HeaderLen
		if len(b) < udp+UDPHeaderLen+BTHLen {
			return 0, fmt.Errorf("RoCEv2 ICRC: IPv6 packet %d bytes, need %d for IP, UDP and BTH: %w",
				len(b), udp+UDPHeaderLen+BTHLen, ErrTruncated)
		}
		crc = icrcByte(icrcAfterOnes, b[0]|0x0F)
		crc = icrcBytes(crc, []byte{0xFF, 0xFF, 0xFF}, -1)
		crc = icrcBytes(crc, b[4:8], ipv6HopLimitOff-4)
		crc = crc32.Update(crc, crc32.IEEETable, b[8:udp])
	default:
		return 0, fmt.Errorf("RoCEv2 ICRC: IP version %d: %w", b[0]>>4, ErrVersion)
	}
	crc = crc32.Update(crc, crc32.IEEETable, b[udp:udp+udpChecksumOff])
	crc = icrcBytes(crc, []byte{0xFF, 0xFF}, -1)
	bth := udp + UDPHeaderLen
	crc = icrcBytes(crc, b[bth:bth+BTHLen], bthResv8aOff)
	return crc32.Update(crc, crc32.IEEETable, b[bth+BTHLen:]), nil
}

// IsIPv4Mapped reports whether g is an IPv4-mapped address
// (::ffff:a.b.c.d), the form of a RoCEv2 GID made from an IPv4 address:
// RoCEv2 sends to such a GID over IPv4.
func (g GID) IsIPv4Mapped() bool {
	return g[0]|g[1]|g[2]|g[3]|g[4]|g[5]|g[6]|g[7]|g[8]|g[9] == 0 && g[10] == 0xFF && g[11] == 0xFF
}
