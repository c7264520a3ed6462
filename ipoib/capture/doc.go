// Package capture is the IPoIB capture framing: how an IPoIB packet is
// laid out in a pcap file of link type 242 (LINKTYPE_IPOIB) so that tshark,
// tcpdump and Wireshark decode it, in both pseudo-header forms (the
// destination address, as Linux captures an ib0 interface, and the
// receive GRH with the sender's QPN). Writers take packets as the link
// layer sends and receives them; Decode reads frames back, from our own
// captures and from real ones. It lives under ipoib because the framing
// is IPoIB's; the generic pcap writer it uses is ib/pcap's.
package capture
