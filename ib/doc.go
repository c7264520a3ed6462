// Package ib is ipoibd's model of InfiniBand: the identifiers, the wire
// formats, the driver interfaces, and the subnet administration (SA)
// client. It knows nothing of IP; the ipoib package builds the link layer
// on top of it.
//
// # Identifiers
//
// types.go names the values the fabric is addressed by: GID, GUID, LID,
// QPN, PKey, QKey, and the IBTA enumerations for MTU, Rate, SL, link layer
// and port state.
//
// # Wire formats
//
// Each header has a struct named and laid out after the IBTA
// specification (Volume 1), with Decode filling a caller's struct and
// Encode writing into a caller's buffer, so the data path allocates
// nothing:
//
//   - LRH, the Local Route Header (IBA 7.7), and GRH, the Global Route
//     Header (IBA 8.3);
//   - BTH, the Base Transport Header (IBA 9.2), and DETH, the Datagram
//     Extended Transport Header (IBA 9.3.3);
//   - ICRC and VCRC, the invariant and variant CRCs that end every packet
//     (IBA 7.8), checked against frames captured from real HCAs;
//   - Packet, a whole UD SEND packet: DecodePacket checks every length,
//     version and CRC and accepts only UD SEND Only (with or without
//     immediate data), and Packet.AppendTo derives the lengths, pad and
//     CRCs. Frame and DecodeFrame read the headers of any transport (RC,
//     UC, RD too) for captures and tools;
//   - management datagrams (MAD, IBA 13.4), SA MADs and the PathRecord and
//     MCMemberRecord attributes (IBA 15.2.5), and the 20-byte IPoIB
//     hardware address (RFC 4391).
//
// Decoders return errors wrapping sentinels (ErrTruncated, ErrLength,
// ErrBadICRC, ErrBadVCRC, ErrUnsupportedOpcode, ...) so a receive path
// can count drops by cause; they never panic on bad input. A MAD with a
// non-zero status becomes a *MADStatusError that errors.Is matches against
// SAStatus values such as SAErrNoRecords, so callers can tell "no such
// path" from "SA busy". (The MGIDs IPoIB joins, RFC 4391 section 4, are
// package ipoib's.) Package ib/pcap
// writes what these codecs produce into captures Wireshark reads.
//
// # Driver model
//
// A Driver (driver.go) is a named pair of functions, probe and open,
// registered at init; the verbs driver (real HCAs and soft-RoCE) and the
// simulator are two, and the layers above never name either. Opening a
// device yields a Device with ports, queue pairs, completion queues and
// address handles, whose methods are split the project's way: control.go
// holds the control plane (open, query, attach, configure; run on the
// device's home loop), io.go the I/O plane (post sends and receives, poll
// completions; run on that loop, never block, never allocate in steady
// state).
//
// # How a datagram moves
//
// To send, the layer above posts a SendWR (an address handle for the
// path, the remote QPN and Q_Key, the payload segments) on a UD queue
// pair. A hardware driver hands it to the HCA, which builds the headers
// and CRCs; a software driver (the simulator) is to build the same bytes
// with Packet.AppendTo and read them back with DecodePacket, so its wire
// is the one real hardware speaks. On receive, a Completion carries the
// payload after a GRHSize-byte area that holds the GRH when one arrived,
// with the sender's QPN, LID and SL from the headers.
//
// # SA client
//
// SAClient sends PathRecord and MCMemberRecord queries to the subnet
// administrator as MADs on QP1 through a MADPort, retransmits them on
// timeout, and completes them on its loop: that is how IPoIB resolves a
// unicast path (LID, SL, rate, MTU) and joins the broadcast group.
package ib
