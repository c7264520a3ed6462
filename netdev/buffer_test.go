package netdev

import (
	"bytes"
	"errors"
	"testing"
)

func TestBufferOps(t *testing.T) {
	// Every case starts from a 32-byte block with 8 bytes of headroom and
	// the 4-byte packet "data", i.e. head 8, tail 12.
	type op struct {
		name string
		do   func(b *Buffer) error
	}
	push := func(n int) op {
		return op{"push", func(b *Buffer) error {
			p, err := b.Push(n)
			if err == nil && len(p) != n {
				return errors.New("wrong slice length")
			}
			return err
		}}
	}
	pull := func(n int) op {
		return op{"pull", func(b *Buffer) error { _, err := b.Pull(n); return err }}
	}
	put := func(n int) op {
		return op{"put", func(b *Buffer) error { _, err := b.Put(n); return err }}
	}
	tests := []struct {
		name           string
		op             op
		wantErr        error
		head, tail     int
		wantPacketText string
	}{
		{"push all headroom", push(8), nil, 0, 12, ""},
		{"push beyond headroom", push(9), ErrNoHeadroom, 8, 12, "data"},
		{"push negative", push(-1), ErrNoHeadroom, 8, 12, "data"},
		{"push zero", push(0), nil, 8, 12, "data"},
		{"pull all", pull(4), nil, 12, 12, ""},
		{"pull beyond length", pull(5), ErrUnderflow, 8, 12, "data"},
		{"pull negative", pull(-3), ErrUnderflow, 8, 12, "data"},
		{"put all tailroom", put(20), nil, 8, 32, ""},
		{"put beyond tailroom", put(21), ErrNoTailroom, 8, 12, "data"},
		{"put negative", put(-1), ErrNoTailroom, 8, 12, "data"},
		{"trim", op{"trim", func(b *Buffer) error { return b.Trim(2) }}, nil, 8, 10, "da"},
		{"trim too much", op{"trim", func(b *Buffer) error { return b.Trim(5) }}, ErrUnderflow, 8, 12, "data"},
		{"truncate", op{"truncate", func(b *Buffer) error { return b.Truncate(1) }}, nil, 8, 9, "d"},
		{"truncate longer", op{"truncate", func(b *Buffer) error { return b.Truncate(5) }}, ErrUnderflow, 8, 12, "data"},
		{"truncate negative", op{"truncate", func(b *Buffer) error { return b.Truncate(-1) }}, ErrUnderflow, 8, 12, "data"},
		{"reserve non-empty", op{"reserve", func(b *Buffer) error { return b.Reserve(1) }}, ErrNotEmpty, 8, 12, "data"},
		{"reset", op{"reset", func(b *Buffer) error { return b.Reset(20) }}, nil, 20, 20, ""},
		{"reset beyond block", op{"reset", func(b *Buffer) error { return b.Reset(33) }}, ErrNoTailroom, 8, 12, "data"},
		{"reset negative", op{"reset", func(b *Buffer) error { return b.Reset(-1) }}, ErrNoTailroom, 8, 12, "data"},
		{"append too long", op{"append", func(b *Buffer) error { return b.Append(make([]byte, 21)) }}, ErrNoTailroom, 8, 12, "data"},
		{"peek too long", op{"peek", func(b *Buffer) error { _, err := b.Peek(5); return err }}, ErrUnderflow, 8, 12, "data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuffer(make([]byte, 32), nil)
			if err := b.Reset(8); err != nil {
				t.Fatal(err)
			}
			if err := b.Append([]byte("data")); err != nil {
				t.Fatal(err)
			}
			err := tc.op.do(b)
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("%s: err %v, want %v", tc.op.name, err, tc.wantErr)
			}
			if b.Headroom() != tc.head || b.Headroom()+b.Len() != tc.tail || b.Headroom()+b.Len()+b.Tailroom() != b.Cap() {
				t.Errorf("headroom %d len %d tailroom %d, want head %d tail %d in 32", b.Headroom(), b.Len(), b.Tailroom(), tc.head, tc.tail)
			}
			if tc.wantPacketText != "" && string(b.Bytes()) != tc.wantPacketText {
				t.Errorf("packet %q, want %q", b.Bytes(), tc.wantPacketText)
			}
		})
	}
}

func TestBufferPushPullRestoresHeader(t *testing.T) {
	b := NewBuffer(make([]byte, 64), nil)
	if err := b.Reserve(16); err != nil {
		t.Fatal(err)
	}
	if err := b.Reserve(4); err != nil { // empty buffer: allowed twice
		t.Fatal(err)
	}
	if b.Headroom() != 20 {
		t.Fatalf("headroom %d after reserving 16+4", b.Headroom())
	}
	_ = b.Append([]byte("payload"))
	h, err := b.Push(3)
	if err != nil {
		t.Fatal(err)
	}
	copy(h, "HDR")
	if got := string(b.Bytes()); got != "HDRpayload" {
		t.Fatalf("after push: %q", got)
	}
	pulled, err := b.Pull(3)
	if err != nil || string(pulled) != "HDR" || string(b.Bytes()) != "payload" {
		t.Fatalf("pull: %q %q %v", pulled, b.Bytes(), err)
	}
	// The pulled bytes are still there for a re-push (what a bridge or a
	// loopback would do).
	h, _ = b.Push(3)
	if string(h) != "HDR" {
		t.Errorf("re-pushed header reads %q", h)
	}
	// Bytes is capped: appending to it must not write the tailroom.
	p := b.Bytes()
	_ = append(p, 'X')
	if _, err := b.Put(1); err != nil {
		t.Fatal(err)
	}
	if b.Bytes()[b.Len()-1] == 'X' {
		t.Error("append to Bytes() wrote into the tailroom")
	}
}

func TestPool(t *testing.T) {
	p, err := NewPool(3, 128, 16)
	if err != nil {
		t.Fatal(err)
	}
	var got []*Buffer
	for range 3 {
		b, err := p.Get()
		if err != nil {
			t.Fatal(err)
		}
		if b.Headroom() != 16 || b.Len() != 0 || b.Tailroom() != 112 {
			t.Fatalf("fresh buffer: head %d len %d tail %d", b.Headroom(), b.Len(), b.Tailroom())
		}
		got = append(got, b)
	}
	if _, err := p.Get(); err != ErrPoolEmpty {
		t.Fatalf("Get on an empty pool: %v, want ErrPoolEmpty", err)
	}
	// Buffers are distinct memory.
	for i, b := range got {
		_ = b.Append([]byte{byte(i)})
	}
	for i, b := range got {
		if b.Bytes()[0] != byte(i) {
			t.Fatalf("buffer %d shares memory", i)
		}
	}
	got[0].Free()
	got[0].Free() // double free: ignored, counted
	foreign := NewBuffer(make([]byte, 128), p)
	foreign.Free() // names the pool as releaser but is not its memory: refused
	if st := p.Stats(); st.Free != 1 || st.BadFrees != 2 {
		t.Fatalf("after a double and a foreign free: %+v", st)
	}
	got[1].Free()
	got[2].Free()
	st := p.Stats()
	if st.Buffers != 3 || st.Free != 3 || st.Exhausted != 1 || st.BadFrees != 2 {
		t.Errorf("stats %+v", st)
	}
	// A reused buffer comes back reset.
	b, _ := p.Get()
	if b.Len() != 0 || b.Headroom() != 16 {
		t.Errorf("reused buffer not reset: head %d len %d", b.Headroom(), b.Len())
	}
	b.Free()
}

func TestPoolRejectsForeignBuffer(t *testing.T) {
	p, _ := NewPool(2, 64, 0)
	q, _ := NewPool(2, 64, 0)
	b, _ := q.Get()
	p.Release(b) // belongs to q
	p.Release(nil)
	if st := p.Stats(); st.BadFrees != 2 || st.Free != 2 {
		t.Errorf("p stats %+v", st)
	}
	b.Free()
	if st := q.Stats(); st.Free != 2 || st.BadFrees != 0 {
		t.Errorf("q stats %+v", st)
	}
}

func TestNewPoolErrors(t *testing.T) {
	for _, tc := range []struct{ count, size, headroom int }{
		{0, 64, 0}, {-1, 64, 0}, {1, 0, 0}, {1, 64, -1}, {1, 64, 65}, {1 << 20, 1 << 30, 0},
	} {
		if _, err := NewPool(tc.count, tc.size, tc.headroom); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewPool(%d, %d, %d): %v, want ErrInvalidConfig", tc.count, tc.size, tc.headroom, err)
		}
	}
}

func BenchmarkPoolGetFree(b *testing.B) {
	p, _ := NewPool(8, 2048, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf, err := p.Get()
		if err != nil {
			b.Fatal(err)
		}
		_, _ = buf.Push(4)
		buf.Free()
	}
}

// FuzzBufferOps runs random sequences of buffer operations and checks that
// none panics and that the three regions always tile the block.
// The program is pairs of (operation, signed count); the seeds are in
// testdata/fuzz/FuzzBufferOps.
func FuzzBufferOps(f *testing.F) {
	f.Fuzz(func(t *testing.T, prog []byte) {
		const size = 64
		b := NewBuffer(make([]byte, size), nil)
		model := []byte{} // the packet as it should be
		for i := 0; i+1 < len(prog); i += 2 {
			n := int(int8(prog[i+1]))
			var err error
			switch prog[i] % 7 {
			case 0:
				var p []byte
				if p, err = b.Push(n); err == nil {
					for j := range p {
						p[j] = byte(n)
					}
					model = append(bytes.Repeat([]byte{byte(n)}, n), model...)
				}
			case 1:
				if _, err = b.Pull(n); err == nil {
					model = model[n:]
				}
			case 2:
				var p []byte
				if p, err = b.Put(n); err == nil {
					for j := range p {
						p[j] = ^byte(n)
					}
					model = append(model, bytes.Repeat([]byte{^byte(n)}, n)...)
				}
			case 3:
				if err = b.Trim(n); err == nil {
					model = model[:len(model)-n]
				}
			case 4:
				if err = b.Truncate(n); err == nil {
					model = model[:n]
				}
			case 5:
				if err = b.Reserve(n); err == nil && len(model) != 0 {
					t.Fatal("Reserve succeeded on a non-empty buffer")
				}
			case 6:
				if err = b.Reset(n); err == nil {
					model = model[:0]
				}
			}
			if b.Headroom() < 0 || b.Tailroom() < 0 || b.Headroom()+b.Len()+b.Tailroom() != size {
				t.Fatalf("regions broken: %d+%d+%d", b.Headroom(), b.Len(), b.Tailroom())
			}
			if !bytes.Equal(b.Bytes(), model) {
				t.Fatalf("packet %x, model %x", b.Bytes(), model)
			}
		}
	})
}
