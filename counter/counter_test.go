package counter

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"
)

type testStats struct {
	Sent    uint64 `json:"sent"`
	Dropped uint64 `json:"dropped_no_path,omitempty"`
	Untaged uint64
	Reason  [2]uint64 `json:"reason"`
}

// TestBlock adds from many goroutines at once and checks every add is
// counted, in the struct and in the snapshot, under the json names.
func TestBlock(t *testing.T) {
	var b Block[testStats]
	const goroutines, adds = 8, 1000
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range adds {
				Inc(&b.V.Sent)
				Add(&b.V.Dropped, 2)
				Inc(&b.V.Reason[1])
				_ = b.Load() // readers race writers, atomically
			}
		}()
	}
	wg.Wait()
	got := b.Load()
	if got.Sent != goroutines*adds || got.Dropped != 2*goroutines*adds || got.Untaged != 0 || got.Reason != [2]uint64{0, goroutines * adds} {
		t.Fatalf("Load = %+v", got)
	}
	snap := b.Snapshot()
	want := Snapshot{{"sent", goroutines * adds}, {"dropped_no_path", 2 * goroutines * adds}, {"Untaged", 0},
		{"reason_0", 0}, {"reason_1", goroutines * adds}}
	if len(snap) != len(want) {
		t.Fatalf("Snapshot = %v", snap)
	}
	for i := range want {
		if snap[i] != want[i] {
			t.Fatalf("Snapshot = %v, want %v", snap, want)
		}
	}
	if v, ok := snap.Get("dropped_no_path"); !ok || v != 2*goroutines*adds {
		t.Fatalf("Get = %d %v", v, ok)
	}
}

func TestBlockRefusesOtherFields(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("a Block of a struct with an int field loaded without complaint")
		}
	}()
	var b Block[struct{ N int }]
	b.Load()
}

func TestSnapshotJSON(t *testing.T) {
	s := Snapshot{{"tx_ok", 3}, {"tx_bytes", 180}, {"a", 0}}
	b, err := json.Marshal(s)
	if err != nil || string(b) != `{"tx_ok":3,"tx_bytes":180,"a":0}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var back Snapshot
	if err := json.Unmarshal(b, &back); err != nil || len(back) != 3 || back[1] != s[1] {
		t.Fatalf("Unmarshal = %v, %v", back, err)
	}
	for _, bad := range []string{`[]`, `{"a":-1}`, `{"a":"1"}`, `{"a":1.5}`, `{"a":1`, `{"a":18446744073709551616}`} {
		var x Snapshot
		if err := json.Unmarshal([]byte(bad), &x); err == nil {
			t.Errorf("Unmarshal(%s) accepted %v", bad, x)
		}
	}
}

// FuzzSnapshotJSON: the CLI decodes snapshots a daemon sent over its
// socket; whatever arrives decodes or fails cleanly, and what decodes
// encodes back to an equal snapshot.
func FuzzSnapshotJSON(f *testing.F) {
	f.Add([]byte(`{"tx_ok":3,"tx_bytes":180}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"a":1,"a":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Snapshot
		if err := s.UnmarshalJSON(b); err != nil {
			var se *json.SyntaxError
			_ = errors.As(err, &se)
			return
		}
		enc, err := s.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var back Snapshot
		if err := back.UnmarshalJSON(enc); err != nil || len(back) != len(s) {
			t.Fatalf("round trip of %s: %v %v", enc, back, err)
		}
		for i := range s {
			if back[i] != s[i] {
				t.Fatalf("round trip of %s: %v != %v", enc, back, s)
			}
		}
	})
}

func TestSnapshotPlus(t *testing.T) {
	for _, tc := range []struct {
		name    string
		s, o    Snapshot
		want    Snapshot
		wantLen int
	}{
		{"same names", Snapshot{{"a", 1}, {"b", 2}}, Snapshot{{"a", 10}, {"b", 20}}, Snapshot{{"a", 11}, {"b", 22}}, 2},
		{"other order", Snapshot{{"a", 1}, {"b", 2}}, Snapshot{{"b", 20}, {"a", 10}}, Snapshot{{"a", 11}, {"b", 22}}, 2},
		{"names only in o follow", Snapshot{{"a", 1}}, Snapshot{{"c", 3}, {"a", 1}, {"d", 4}}, Snapshot{{"a", 2}, {"c", 3}, {"d", 4}}, 3},
		{"empty o", Snapshot{{"a", 1}}, nil, Snapshot{{"a", 1}}, 1},
		{"empty s", nil, Snapshot{{"a", 1}}, Snapshot{{"a", 1}}, 1},
		{"both empty", nil, nil, Snapshot{}, 0},
	} {
		s0 := append(Snapshot(nil), tc.s...)
		o0 := append(Snapshot(nil), tc.o...)
		got := tc.s.Plus(tc.o)
		if len(got) != tc.wantLen {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
				break
			}
		}
		for i := range s0 {
			if tc.s[i] != s0[i] {
				t.Errorf("%s: Plus changed s to %v", tc.name, tc.s)
			}
		}
		for i := range o0 {
			if tc.o[i] != o0[i] {
				t.Errorf("%s: Plus changed o to %v", tc.name, tc.o)
			}
		}
	}
}
