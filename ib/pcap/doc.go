// Package pcap writes packet captures of InfiniBand traffic in the forms
// Wireshark and tshark read, so the simulator, the daemon's taps and tests
// can leave evidence a human can open.
//
// Two forms matter:
//
//   - Raw IB packets (LRH through VCRC) go in ERF records of type
//     InfiniBand inside a pcap file of link type ERF (197); ERFWriter writes
//     them. The dedicated link type 247 exists but tshark 4.0 cannot open
//     it.
//   - IPoIB frames use link type 242 with a 40-byte pseudo-header before
//     the 4-byte IPoIB header; that framing is IPoIB's, so it lives in
//     ipoib/capture, which writes through this package's Writer.
//
// Writer is the common base: one pcap file of one link type, nanosecond
// timestamps, built on gopacket's pcapgo. Every writer here is safe for
// concurrent use; a record is written whole under a lock.
//
// ERFWriter and Writer take bytes as they are, from ib's codecs or a real
// HCA; they check framing, not the packets inside.
package pcap
