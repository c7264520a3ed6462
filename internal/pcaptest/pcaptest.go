// Package pcaptest reads pcap files for tests: the real captures the codec
// tests are checked against, and the files the writers under test produce;
// and it has tshark read them (tshark.go), as Wireshark would.
// It is test support only; nothing outside _test.go files imports it.
package pcaptest

import (
	"errors"
	"io"
	"os"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Read returns every record of the pcap file at path, failing tb unless
// the file's link type is want and every record is whole (captured length
// equal to the bytes read).
func Read(tb testing.TB, path string, want layers.LinkType) [][]byte {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	return ReadFrom(tb, path, f, want)
}

// ReadFrom is Read for the pcap file in in, which failures call name.
func ReadFrom(tb testing.TB, name string, in io.Reader, want layers.LinkType) [][]byte {
	tb.Helper()
	r, err := pcapgo.NewReader(in)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	if r.LinkType() != want {
		tb.Fatalf("%s: link type %d, want %d", name, r.LinkType(), want)
	}
	var recs [][]byte
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return recs
		}
		if err != nil {
			tb.Fatalf("%s: record %d: %v", name, len(recs)+1, err)
		}
		if ci.CaptureLength != len(data) {
			tb.Fatalf("%s: record %d: caplen %d, %d bytes", name, len(recs)+1, ci.CaptureLength, len(data))
		}
		recs = append(recs, data)
	}
}
