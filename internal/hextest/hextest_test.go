package hextest

import (
	"bytes"
	"testing"
)

func TestBytes(t *testing.T) {
	got := Bytes(t, "0a 0b\n\t0c", "0d0e")
	if want := []byte{10, 11, 12, 13, 14}; !bytes.Equal(got, want) {
		t.Errorf("Bytes = %x, want %x", got, want)
	}
	if got := Bytes(t); len(got) != 0 {
		t.Errorf("Bytes of nothing = %x", got)
	}
}
