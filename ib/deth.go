package ib

import (
	"encoding/binary"
	"fmt"
)

// DETHLen is the size of the Datagram Extended Transport Header (IBA 9.3.3).
const DETHLen = 8

// ImmDtLen is the size of the Immediate Data extended header that follows
// the DETH on a SEND with Immediate (IBA 9.3.5).
const ImmDtLen = 4

// DETH is the Datagram Extended Transport Header (IBA 9.3.3), carried by
// every UD packet right after the BTH. It is what makes a datagram
// answerable: the receiver learns the sender's QP from it, and checks the
// Q_Key before delivering.
//
// Wire layout, big-endian:
//
//	bytes 0-3: Q_Key
//	byte 4: reserved
//	bytes 5-7: SrcQP
type DETH struct {
	// QKey must match the receiving QP's Q_Key or the packet is dropped.
	QKey QKey
	// SrcQP is the sending queue pair (24 bits).
	SrcQP QPN
}

// Decode fills h from the first DETHLen bytes of b; the reserved byte is
// ignored.
func (h *DETH) Decode(b []byte) error {
	if len(b) < DETHLen {
		return fmt.Errorf("decode DETH: have %d bytes, need %d: %w", len(b), DETHLen, ErrTruncated)
	}
	h.QKey = QKey(binary.BigEndian.Uint32(b[0:4]))
	h.SrcQP = QPN(binary.BigEndian.Uint32(b[4:8])) & QPNMask
	return nil
}

// Encode writes h into the first DETHLen bytes of b with the reserved byte
// zero. A SrcQP wider than 24 bits fails with ErrFieldRange.
func (h *DETH) Encode(b []byte) error {
	if len(b) < DETHLen {
		return fmt.Errorf("encode DETH: buffer %d bytes, need %d: %w", len(b), DETHLen, ErrTruncated)
	}
	if !h.SrcQP.Valid() {
		return fmt.Errorf("encode DETH: SrcQP %#x does not fit 24 bits: %w", uint32(h.SrcQP), ErrFieldRange)
	}
	binary.BigEndian.PutUint32(b[0:4], uint32(h.QKey))
	binary.BigEndian.PutUint32(b[4:8], uint32(h.SrcQP))
	return nil
}
