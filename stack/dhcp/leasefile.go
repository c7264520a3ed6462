// The server's lease file: its bindings as JSON, so that a restarted
// server hands every client the address it had. Called under the
// server's lock.

package dhcp

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"time"
)

// leaseFileVersion is written into every lease file; a file of another
// version is refused rather than misread.
const leaseFileVersion = 1

// leaseFile is the JSON document.
type leaseFile struct {
	Version  int            `json:"version"`
	ServerID netip.Addr     `json:"server_id"`
	Leases   []leaseRecord  `json:"leases"`
	Declined []declineEntry `json:"declined,omitempty"`
}

// leaseRecord is one binding. Exactly one of ClientID and HWAddr is set.
type leaseRecord struct {
	// ClientID is option 61, in hex.
	ClientID string `json:"client_id,omitempty"`
	// HWAddr is the htype byte and chaddr of a client without option
	// 61, in hex.
	HWAddr  string     `json:"hw_addr,omitempty"`
	Addr    netip.Addr `json:"addr"`
	State   string     `json:"state"`
	Expires time.Time  `json:"expires"`
}

// declineEntry is one quarantined address.
type declineEntry struct {
	Addr  netip.Addr `json:"addr"`
	Until time.Time  `json:"until"`
}

// persist writes the lease file if there is one; a failure is counted
// and logged, and the server carries on from memory.
func (s *Server) persist() {
	if s.cfg.LeaseFile == "" {
		return
	}
	if err := writeLeaseFile(s.cfg.LeaseFile, s.snapshot()); err != nil {
		s.stats.leaseFileErrors.Add(1)
		s.logf("%v", err)
	}
}

// snapshot returns the pool as a leaseFile. Offers are left out: they
// are promises of seconds, not worth a restart.
func (s *Server) snapshot() *leaseFile {
	lf := &leaseFile{Version: leaseFileVersion, ServerID: s.cfg.ServerID, Leases: []leaseRecord{}}
	for _, b := range s.pool.byAddr {
		if b.state == bindOffered {
			continue
		}
		rec := leaseRecord{Addr: b.addr, State: b.state.String(), Expires: b.expiry.UTC()}
		switch k := []byte(b.key); k[0] {
		case keyClientID:
			rec.ClientID = hex.EncodeToString(k[1:])
		case keyHWAddr:
			rec.HWAddr = hex.EncodeToString(k[1:])
		}
		lf.Leases = append(lf.Leases, rec)
	}
	slices.SortFunc(lf.Leases, func(x, y leaseRecord) int { return x.Addr.Compare(y.Addr) })
	for a, until := range s.pool.declined {
		lf.Declined = append(lf.Declined, declineEntry{Addr: a, Until: until.UTC()})
	}
	slices.SortFunc(lf.Declined, func(x, y declineEntry) int { return x.Addr.Compare(y.Addr) })
	return lf
}

// writeLeaseFile writes lf to path atomically: a temporary file in the
// same directory, synced, then renamed over path, so a crash leaves the
// old file or the new one and never half of either.
func writeLeaseFile(path string, lf *leaseFile) error {
	data, err := json.MarshalIndent(lf, "", "  ")
	if err != nil {
		return fmt.Errorf("dhcp: encode lease file %s: %w", path, err)
	}
	if err := writeFileAtomic(path, append(data, '\n')); err != nil {
		return fmt.Errorf("dhcp: write lease file %s: %w", path, err)
	}
	return nil
}

// readLeaseFile reads path; a missing file is an empty one.
func readLeaseFile(path string) (*leaseFile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &leaseFile{Version: leaseFileVersion}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dhcp: read lease file: %w", err)
	}
	var lf leaseFile
	if err := json.Unmarshal(data, &lf); err != nil {
		return nil, fmt.Errorf("dhcp: lease file %s: %w", path, err)
	}
	if lf.Version != leaseFileVersion {
		return nil, fmt.Errorf("dhcp: lease file %s: version %d, this server writes %d: %w", path, lf.Version, leaseFileVersion, ErrBadConfig)
	}
	return &lf, nil
}

// load fills the pool from the lease file. Records that no longer fit
// the configuration (an address outside the pool, a key that does not
// decode) are dropped with a log line; the next write forgets them.
func (s *Server) load() error {
	lf, err := readLeaseFile(s.cfg.LeaseFile)
	if err != nil {
		return err
	}
	for _, rec := range lf.Leases {
		key, err := rec.key()
		if err == nil && !s.pool.contains(rec.Addr) {
			err = fmt.Errorf("address %v outside the pool", rec.Addr)
		}
		state := bindReleased
		switch rec.State {
		case "bound":
			state = bindBound
		case "released":
		default:
			if err == nil {
				err = fmt.Errorf("state %q", rec.State)
			}
		}
		if err != nil {
			s.logf("lease file %s: dropping record for %v: %v", s.cfg.LeaseFile, rec.Addr, err)
			continue
		}
		s.pool.set(key, rec.Addr, state, rec.Expires)
	}
	for _, d := range lf.Declined {
		if s.pool.contains(d.Addr) {
			s.pool.declined[d.Addr] = d.Until
		}
	}
	return nil
}

// key decodes the record's client key.
func (r *leaseRecord) key() (clientKey, error) {
	switch {
	case r.ClientID != "" && r.HWAddr == "":
		id, err := hex.DecodeString(r.ClientID)
		if err != nil || len(id) < 2 {
			return "", fmt.Errorf("client_id %q: not a hex identifier of 2 or more bytes", r.ClientID)
		}
		return clientKey(append([]byte{keyClientID}, id...)), nil
	case r.HWAddr != "" && r.ClientID == "":
		hw, err := hex.DecodeString(r.HWAddr)
		if err != nil || len(hw) < 2 {
			return "", fmt.Errorf("hw_addr %q: not a hex htype and address", r.HWAddr)
		}
		return clientKey(append([]byte{keyHWAddr}, hw...)), nil
	}
	return "", errors.New("needs exactly one of client_id and hw_addr")
}
