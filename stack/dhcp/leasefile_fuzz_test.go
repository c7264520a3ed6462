package dhcp

import (
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// FuzzServerLeaseFile feeds arbitrary bytes to a server as its lease
// file: NewServer either refuses them with an error or loads a pool that
// is consistent (every binding indexed both ways, inside the pool), and
// what it writes back reads back the same.
func FuzzServerLeaseFile(f *testing.F) {
	for _, seed := range []string{
		`{"version":1,"server_id":"10.7.0.1","leases":[{"client_id":"ff00112233","addr":"10.7.0.10","state":"bound","expires":"2030-01-01T00:00:00Z"}],"declined":[{"addr":"10.7.0.11","until":"2030-01-01T00:00:00Z"}]}`,
		`{"version":1,"leases":[{"hw_addr":"01020304050607","addr":"10.7.0.12","state":"released","expires":"2020-01-01T00:00:00Z"}]}`,
		`{"version":1,"leases":[{"client_id":"ff00","hw_addr":"0102","addr":"10.7.0.12","state":"bound"}]}`,
		`{"version":1,"leases":[{"client_id":"zz","addr":"10.9.0.1","state":"weird"}]}`,
		`{"version":1,"leases":[{"client_id":"ff01","addr":"10.7.0.10","state":"bound"},{"client_id":"ff02","addr":"10.7.0.10","state":"bound"}]}`,
		`{"version":2}`,
		`{"version":1,"leases":null}`,
		`[]`,
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "leases.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := serverConfig(nil, NewManualClock(testEpoch))
		cfg.LeaseFile = path
		s, err := NewServer(cfg)
		if err != nil {
			return
		}
		for k, b := range s.pool.byKey {
			if b.key != k || s.pool.byAddr[b.addr] != b || !s.pool.contains(b.addr) {
				t.Fatalf("binding %+v inconsistent after loading %q", b, data)
			}
		}
		if len(s.pool.byKey) != len(s.pool.byAddr) {
			t.Fatalf("%d keys, %d addresses after loading %q", len(s.pool.byKey), len(s.pool.byAddr), data)
		}
		first := s.snapshot()
		out := filepath.Join(dir, "again.json")
		if err := writeLeaseFile(out, first); err != nil {
			t.Fatal(err)
		}
		cfg.LeaseFile = out
		s2, err := NewServer(cfg)
		if err != nil {
			t.Fatalf("reading back what the server wrote: %v", err)
		}
		if second := s2.snapshot(); !reflect.DeepEqual(first, second) {
			t.Fatalf("round trip changed the leases:\n%+v\n%+v", first, second)
		}
	})
}

// FuzzClientLeaseFile feeds arbitrary bytes to the client's lease file
// reader: an error, or a lease the client could hold (a usable address
// in a /1 to /30, a server, times in order, not expired) that encodes and
// decodes to itself.
func FuzzClientLeaseFile(f *testing.F) {
	id := NewClientID(DefaultIAID(testGUID(0)), testGUID(0))
	good, _ := json.Marshal(clientLeaseFile{Version: clientLeaseVersion, ClientID: hex.EncodeToString(id), Lease: Lease{
		Addr: netip.MustParsePrefix("10.7.0.10/24"), Router: testRouter, ServerID: testServerID,
		Duration: time.Hour, T1: 30 * time.Minute, T2: 52 * time.Minute, Start: testEpoch,
	}})
	for _, seed := range []string{
		string(good),
		`{"version":1,"client_id":"00","lease":{}}`,
		`{"version":1,"client_id":"` + hex.EncodeToString(id) + `","lease":{"Addr":"10.7.0.10/32","ServerID":"10.7.0.1","Duration":1}}`,
		`{"version":1,"client_id":"` + hex.EncodeToString(id) + `","lease":{"Addr":"0.0.0.0/24","ServerID":"10.7.0.1","Duration":3600000000000}}`,
		`{"version":1,"client_id":"` + hex.EncodeToString(id) + `","lease":{"Addr":"10.7.0.10/24","ServerID":"10.7.0.1","Duration":9223372036854775807,"T1":-1}}`,
		`{"version":3}`,
		`nope`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := parseClientLease(data, id, testEpoch)
		if err != nil {
			return
		}
		if !isUsableUnicast(l.Addr.Addr()) || !isUsableUnicast(l.ServerID) || l.Duration <= 0 || l.T2 < l.T1 ||
			(!l.Infinite() && !testEpoch.Before(l.Expiry())) {
			t.Fatalf("accepted a lease no client could hold: %+v from %q", l, data)
		}
		again, err := json.Marshal(clientLeaseFile{Version: clientLeaseVersion, ClientID: hex.EncodeToString(id), Lease: *l})
		if err != nil {
			t.Fatal(err)
		}
		l2, err := parseClientLease(again, id, testEpoch)
		if err != nil || !reflect.DeepEqual(l.clone(), l2.clone()) {
			t.Fatalf("round trip: %+v, %v; want %+v", l2, err, l)
		}
	})
}
