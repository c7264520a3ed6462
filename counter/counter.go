package counter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"
)

// Block is the live form of a counter struct T, every field of which is a
// uint64 with a json tag (its name). The zero Block is ready, all counters
// zero. Its fields are written only with Inc and Add and read only with
// Load and Snapshot, so every access is atomic; a Block must not be
// copied once in use.
type Block[T any] struct {
	// V holds the counters. Take the address of a field for Inc and Add;
	// never read or assign it directly.
	V T
}

// Inc adds one to the counter at p, a field of a Block's V.
func Inc(p *uint64) { atomic.AddUint64(p, 1) }

// Add adds n to the counter at p, a field of a Block's V.
func Add(p *uint64, n uint64) { atomic.AddUint64(p, n) }

// words returns b.V as its uint64 words, after checking that T is what
// Block needs: a struct whose fields are uint64 or arrays of uint64 (a
// counter per reason, indexed by the reason). A T with another kind of
// field is a programming error that the first Load of any Block of T
// reports, in every test that reads it.
func (b *Block[T]) words() []uint64 {
	t := reflect.TypeFor[T]()
	if t.Kind() != reflect.Struct {
		panic(fmt.Sprintf("counter: Block of %v: not a struct", t))
	}
	for i := range t.NumField() {
		f := t.Field(i)
		ft := f.Type
		if ft.Kind() == reflect.Array {
			ft = ft.Elem()
		}
		if ft.Kind() != reflect.Uint64 {
			panic(fmt.Sprintf("counter: Block of %v: field %s is %v, want uint64 or an array of them", t, f.Name, f.Type))
		}
	}
	n := int(t.Size() / 8)
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(&b.V)), n)
}

// Load returns a copy of the counters, each read atomically (the set is
// not one instant: a packet in flight may show in one counter and not yet
// in the next). Safe from any goroutine.
func (b *Block[T]) Load() T {
	var out T
	if w := b.words(); len(w) > 0 {
		dst := unsafe.Slice((*uint64)(unsafe.Pointer(&out)), len(w))
		for i := range w {
			dst[i] = atomic.LoadUint64(&w[i])
		}
	}
	return out
}

// Snapshot returns the counters by name, in field order; a field's name
// is its json tag (up to the first comma), or its Go name without one.
func (b *Block[T]) Snapshot() Snapshot {
	return Of(b.Load())
}

// Of returns the counters of v, a struct as Block wants (a value Load
// returned, say), by name in field order; the elements of an array field
// are named after the field with _0, _1... appended.
func Of[T any](v T) Snapshot {
	rv := reflect.ValueOf(v)
	t := rv.Type()
	out := make(Snapshot, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			name = f.Name
		}
		if fv := rv.Field(i); fv.Kind() == reflect.Array {
			for j := range fv.Len() {
				out = append(out, Value{Name: name + "_" + strconv.Itoa(j), Value: fv.Index(j).Uint()})
			}
			continue
		}
		out = append(out, Value{Name: name, Value: rv.Field(i).Uint()})
	}
	return out
}

// Value is one named counter of a Snapshot.
type Value struct {
	Name  string
	Value uint64
}

// Snapshot is a list of counters in a stable order. It marshals to a JSON
// object whose keys keep that order ({"tx_ok":3,"tx_bytes":180,...}) and
// unmarshals from one.
type Snapshot []Value

// Get returns the value of the counter called name.
func (s Snapshot) Get(name string) (uint64, bool) {
	for _, cv := range s {
		if cv.Name == name {
			return cv.Value, true
		}
	}
	return 0, false
}

// MarshalJSON writes s as an object with keys in s's order.
func (s Snapshot) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 32*len(s)+2)
	b = append(b, '{')
	for i, cv := range s {
		if i > 0 {
			b = append(b, ',')
		}
		// JSON's string escapes, not Go's: strconv's quoting writes
		// \x7f and \a, which JSON has not.
		q, err := json.Marshal(cv.Name)
		if err != nil {
			return nil, fmt.Errorf("encode counter %q: %w", cv.Name, err)
		}
		b = append(b, q...)
		b = append(b, ':')
		b = strconv.AppendUint(b, cv.Value, 10)
	}
	return append(b, '}'), nil
}

// UnmarshalJSON reads an object of counter names and unsigned integers,
// keeping the order of its keys.
func (s *Snapshot) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("decode counter snapshot: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("decode counter snapshot: want an object, got %v", tok)
	}
	var out Snapshot
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("decode counter snapshot: %w", err)
		}
		name, _ := tok.(string)
		tok, err = dec.Token()
		if err != nil {
			return fmt.Errorf("decode counter snapshot: counter %q: %w", name, err)
		}
		num, ok := tok.(json.Number)
		if !ok {
			return fmt.Errorf("decode counter snapshot: counter %q: want a number, got %v", name, tok)
		}
		v, err := strconv.ParseUint(string(num), 10, 64)
		if err != nil {
			return fmt.Errorf("decode counter snapshot: counter %q: %w", name, err)
		}
		out = append(out, Value{Name: name, Value: v})
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("decode counter snapshot: %w", err)
	}
	*s = out
	return nil
}

// Plus returns the counters of s with those of o added, matched by name:
// in s's order, then o's names that s lacks, in o's order. Neither is
// changed. It carries counts across two lives of one thing, such as an
// interface opened again after its device failed; every counter here
// only grows, so the sum is the count of both lives.
func (s Snapshot) Plus(o Snapshot) Snapshot {
	out := make(Snapshot, len(s), len(s)+len(o))
	copy(out, s)
	for _, ov := range o {
		if i := slices.IndexFunc(out[:len(s)], func(v Value) bool { return v.Name == ov.Name }); i >= 0 {
			out[i].Value += ov.Value
		} else {
			out = append(out, ov)
		}
	}
	return out
}

// Count returns the value of the counter called name, or zero when s has
// no such counter.
func (s Snapshot) Count(name string) uint64 {
	v, _ := s.Get(name)
	return v
}
