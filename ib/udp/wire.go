package udp

// RoCEv2 datagrams as the sockets see them: encoding a UD SEND behind a
// pseudo IP and UDP header (the kernel writes the real ones; the ICRC
// covers them), and decoding what a raw socket delivers. Both are pure
// functions of bytes, used by the I/O path on the device's loop; they never
// allocate.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/ipoibd/ipoibd/ib"
)

// Sizes of a RoCEv2 UD datagram around its payload.
const (
	// udOverhead is what a UD SEND adds to the payload inside UDP: BTH,
	// DETH and ICRC (pad aside).
	udOverhead = ib.BTHLen + ib.DETHLen + ib.ICRCLen
	// maxIPHeader is the room reserved before the UDP header in every
	// buffer: an IPv6 header is the larger of the two.
	maxIPHeader = ib.IPv6HeaderLen
	// ipv4DF is the IPv4 flags/fragment-offset word with Don't Fragment
	// set. The send socket asks for DF (IP_PMTUDISC_DO), so the kernel
	// sends the IPv4 identification 0 (ip_select_ident_segs: an
	// unconnected socket's DF datagrams get ID 0), which the ICRC covers.
	ipv4DF = 0x4000
	// ipProtoUDP is the protocol number of UDP in the IP header.
	ipProtoUDP = 17
)

// Errors the decoder wraps; the receive path counts each kind.
var (
	// ErrNotRoCEv2 says the datagram is not a RoCEv2 UD SEND for us: not
	// UDP to port 4791, fragmented, or a transport other than UD.
	ErrNotRoCEv2 = errors.New("udp: not a RoCEv2 UD datagram")
	// ErrMalformed says lengths or versions in the headers disagree with
	// the datagram.
	ErrMalformed = errors.New("udp: malformed RoCEv2 datagram")
)

// datagram is a decoded RoCEv2 UD SEND. Payload aliases the buffer.
type datagram struct {
	// SGID and DGID are the IP source and destination as GIDs (IPv4
	// addresses in their IPv4-mapped form).
	SGID, DGID ib.GID
	// TClass, FlowLabel and HopLimit come from the IP header (IPv4: TOS,
	// none, TTL).
	TClass    uint8
	FlowLabel uint32
	HopLimit  uint8
	// SrcPort is the UDP source port (any is accepted).
	SrcPort uint16
	BTH     ib.BTH
	DETH    ib.DETH
	// ImmDt is the immediate data of OpUDSendOnlyImm.
	ImmDt   uint32
	Payload []byte
}

// decodeDatagram decodes b, one RoCEv2 packet from the first byte of its
// IPv4 or IPv6 header to the end of the ICRC, into d, and checks the ICRC.
// Bytes after the IP datagram's own length are ignored. Errors wrap
// ErrNotRoCEv2, ErrMalformed, ib.ErrBadICRC or ib.ErrUnsupportedOpcode.
func decodeDatagram(b []byte, d *datagram) error {
	if len(b) < 1 {
		return fmt.Errorf("udp: empty datagram: %w", ErrMalformed)
	}
	var udp int
	switch b[0] >> 4 {
	case 4:
		udp = ib.IPv4HeaderLen
		if len(b) < udp+ib.UDPHeaderLen {
			return fmt.Errorf("udp: IPv4 datagram of %d bytes: %w", len(b), ErrMalformed)
		}
		if b[0]&0xF != 5 {
			return fmt.Errorf("udp: IPv4 header of %d words, RoCEv2 sends 5: %w", b[0]&0xF, ErrNotRoCEv2)
		}
		total := int(binary.BigEndian.Uint16(b[2:]))
		if total < udp+ib.UDPHeaderLen || total > len(b) {
			return fmt.Errorf("udp: IPv4 total length %d, %d bytes received: %w", total, len(b), ErrMalformed)
		}
		b = b[:total]
		if b[9] != ipProtoUDP {
			return fmt.Errorf("udp: IPv4 protocol %d: %w", b[9], ErrNotRoCEv2)
		}
		if binary.BigEndian.Uint16(b[6:])&0x3FFF != 0 {
			return fmt.Errorf("udp: IPv4 fragment: %w", ErrNotRoCEv2)
		}
		d.SGID = ib.GID(netip.AddrFrom4([4]byte(b[12:16])).As16())
		d.DGID = ib.GID(netip.AddrFrom4([4]byte(b[16:20])).As16())
		d.TClass, d.FlowLabel, d.HopLimit = b[1], 0, b[8]
	case 6:
		udp = ib.IPv6HeaderLen
		if len(b) < udp+ib.UDPHeaderLen {
			return fmt.Errorf("udp: IPv6 datagram of %d bytes: %w", len(b), ErrMalformed)
		}
		pl := int(binary.BigEndian.Uint16(b[4:]))
		if pl < ib.UDPHeaderLen || udp+pl > len(b) {
			return fmt.Errorf("udp: IPv6 payload length %d, %d bytes follow the header: %w", pl, len(b)-udp, ErrMalformed)
		}
		b = b[:udp+pl]
		if b[6] != ipProtoUDP {
			return fmt.Errorf("udp: IPv6 next header %d: %w", b[6], ErrNotRoCEv2)
		}
		d.SGID = ib.GID(b[8:24])
		d.DGID = ib.GID(b[24:40])
		w := binary.BigEndian.Uint32(b)
		d.TClass, d.FlowLabel, d.HopLimit = uint8(w>>20), w&0xFFFFF, b[7]
	default:
		return fmt.Errorf("udp: IP version %d: %w", b[0]>>4, ErrMalformed)
	}
	uh := b[udp:]
	d.SrcPort = binary.BigEndian.Uint16(uh)
	if port := binary.BigEndian.Uint16(uh[2:]); port != ib.RoCEv2Port {
		return fmt.Errorf("udp: UDP port %d: %w", port, ErrNotRoCEv2)
	}
	if ul := int(binary.BigEndian.Uint16(uh[4:])); ul != len(uh) {
		return fmt.Errorf("udp: UDP length %d, %d bytes in the IP datagram: %w", ul, len(uh), ErrMalformed)
	}
	bth := uh[ib.UDPHeaderLen:]
	if len(bth) < udOverhead {
		return fmt.Errorf("udp: %d bytes after the UDP header, a UD SEND has at least %d: %w", len(bth), udOverhead, ErrMalformed)
	}
	if err := d.BTH.DecodeAnyOpcode(bth); err != nil {
		return fmt.Errorf("udp: %w: %w", ErrMalformed, err)
	}
	if d.BTH.OpCode != ib.OpUDSendOnly && d.BTH.OpCode != ib.OpUDSendOnlyImm {
		return fmt.Errorf("udp: BTH opcode %v: %w: %w", d.BTH.OpCode, ErrNotRoCEv2, ib.ErrUnsupportedOpcode)
	}
	if d.BTH.TVer != 0 {
		return fmt.Errorf("udp: BTH TVer %d: %w", d.BTH.TVer, ErrMalformed)
	}
	icrcAt := len(b) - ib.ICRCLen
	want := binary.LittleEndian.Uint32(b[icrcAt:])
	got, err := ib.ICRCRoCEv2(b[:icrcAt])
	if err != nil {
		return fmt.Errorf("udp: %w: %w", ErrMalformed, err)
	}
	if got != want {
		return fmt.Errorf("udp: ICRC on the wire %#08x, computed %#08x: %w", want, got, ib.ErrBadICRC)
	}
	rest := bth[ib.BTHLen : len(bth)-ib.ICRCLen]
	_ = d.DETH.Decode(rest) // length checked above
	rest = rest[ib.DETHLen:]
	d.ImmDt = 0
	if d.BTH.OpCode == ib.OpUDSendOnlyImm {
		if len(rest) < ib.ImmDtLen {
			return fmt.Errorf("udp: no room for the immediate data: %w", ErrMalformed)
		}
		d.ImmDt = binary.BigEndian.Uint32(rest)
		rest = rest[ib.ImmDtLen:]
	}
	if int(d.BTH.PadCnt) > len(rest) {
		return fmt.Errorf("udp: PadCnt %d with %d payload bytes: %w", d.BTH.PadCnt, len(rest), ErrMalformed)
	}
	d.Payload = rest[:len(rest)-int(d.BTH.PadCnt)]
	return nil
}

// sendHeader is what encodeDatagram needs to know of the IP and UDP
// headers the kernel will write, for the ICRC.
type sendHeader struct {
	// V6 says IPv6; otherwise IPv4 (addresses in IPv4-mapped form).
	V6 bool
	// Src and Dst are the IP addresses as 16 bytes.
	Src, Dst [16]byte
	// SrcPort is the UDP source port the socket is bound to.
	SrcPort uint16
}

// ipHeaderLen returns the length of h's IP header.
func (h *sendHeader) ipHeaderLen() int {
	if h.V6 {
		return ib.IPv6HeaderLen
	}
	return ib.IPv4HeaderLen
}

// encodeDatagram writes a UD SEND into buf: from buf[maxIPHeader-iphl]
// the pseudo IP header and UDP header the ICRC covers, then BTH, DETH,
// the payload segments, pad and ICRC. It returns the bytes the UDP socket
// sends (BTH through ICRC). buf must hold maxIPHeader + UDPHeaderLen +
// udOverhead + payload + 3 bytes; it fails with ib.ErrTruncated if not.
func encodeDatagram(buf []byte, h *sendHeader, bth *ib.BTH, deth *ib.DETH, payload [][]byte) ([]byte, error) {
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	pad := -n & 3
	udpAt := maxIPHeader
	bthAt := udpAt + ib.UDPHeaderLen
	end := bthAt + ib.BTHLen + ib.DETHLen + n + pad + ib.ICRCLen
	if end > len(buf) || end-udpAt > 0xFFFF {
		return nil, fmt.Errorf("udp: %d-byte payload does not fit a %d-byte buffer: %w", n, len(buf), ib.ErrTruncated)
	}
	udpLen := end - udpAt
	ip := buf[udpAt-h.ipHeaderLen() : udpAt]
	if h.V6 {
		binary.BigEndian.PutUint32(ip, 6<<28)
		binary.BigEndian.PutUint16(ip[4:], uint16(udpLen))
		ip[6], ip[7] = ipProtoUDP, 0
		copy(ip[8:24], h.Src[:])
		copy(ip[24:40], h.Dst[:])
	} else {
		ip[0], ip[1] = 0x45, 0
		binary.BigEndian.PutUint16(ip[2:], uint16(ib.IPv4HeaderLen+udpLen))
		binary.BigEndian.PutUint16(ip[4:], 0) // ID: see ipv4DF
		binary.BigEndian.PutUint16(ip[6:], ipv4DF)
		ip[8], ip[9] = 0, ipProtoUDP
		ip[10], ip[11] = 0, 0
		copy(ip[12:16], h.Src[12:])
		copy(ip[16:20], h.Dst[12:])
	}
	uh := buf[udpAt:bthAt]
	binary.BigEndian.PutUint16(uh, h.SrcPort)
	binary.BigEndian.PutUint16(uh[2:], ib.RoCEv2Port)
	binary.BigEndian.PutUint16(uh[4:], uint16(udpLen))
	binary.BigEndian.PutUint16(uh[6:], 0)
	b := *bth
	b.PadCnt = uint8(pad)
	if err := b.Encode(buf[bthAt:]); err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	if err := deth.Encode(buf[bthAt+ib.BTHLen:]); err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	at := bthAt + ib.BTHLen + ib.DETHLen
	for _, p := range payload {
		at += copy(buf[at:], p)
	}
	clear(buf[at : at+pad])
	at += pad
	crc, err := ib.ICRCRoCEv2(buf[udpAt-h.ipHeaderLen() : at])
	if err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	binary.LittleEndian.PutUint32(buf[at:], crc)
	return buf[bthAt:end], nil
}
