package sim

import (
	"testing"

	"github.com/ipoibd/ipoibd/ib"
)

// TestIPoIBPartitionGroups checks Config.IPoIBPartitions against what
// OpenSM does with partitions.conf's ipoib lines (smtest sees it on
// OpenSM): the broadcast group exists before anyone joins, so a plain
// join succeeds and gets the Group defaults; a create-capable join with
// another Q_Key is refused; the group outlives its last member; and the
// SM makes it again after a restart that forgot its groups.
func TestIPoIBPartitionGroups(t *testing.T) {
	e := newEnv(t, Config{IPoIBPartitions: []ib.PKey{ib.PKeyDefault}})
	hosts := e.star(2, HostConfig{})
	a, b := e.open(hosts[0], 1), e.open(hosts[1], 1)

	plain, mask := ib.MCMemberQuery(broadcastMGID, a.gid(), ib.PKeyDefault, ib.JoinFullMember)
	got, st := e.join(a, plain, mask)
	if st != 0 {
		t.Fatalf("plain join of the SM's broadcast group: status %v", st)
	}
	if got.MLID != 0xC000 || got.QKey != DefaultGroupQKey || got.MTU != DefaultGroupMTU || got.Rate != DefaultGroupRate ||
		got.MTUSelector != ib.SelectorExactly || got.PacketLifeTime != DefaultPacketLifeTime {
		t.Errorf("group %+v, want MLID 0xc000 and the Group defaults", got)
	}

	create, cmask := createJoin(broadcastMGID, b.gid(), ib.PKeyDefault, 0x1234)
	if _, st := e.join(b, create, cmask); st.SAStatus() != ib.SAErrReqInvalid {
		t.Errorf("create-join with Q_Key 0x1234: status %v, want ERR_REQ_INVALID", st)
	}

	if ans := e.ask(a, ib.MethodDelete, ib.SAAttrMCMemberRecord, mask, &plain); ans.Status != 0 {
		t.Fatalf("leave: status %v", ans.Status)
	}
	plainB, _ := ib.MCMemberQuery(broadcastMGID, b.gid(), ib.PKeyDefault, ib.JoinFullMember)
	if got, st := e.join(b, plainB, mask); st != 0 || got.MLID != 0xC000 {
		t.Errorf("plain join after the last member left: status %v MLID %v, want the group kept", st, got.MLID)
	}

	if err := e.f.SetSMUp(false); err != nil {
		t.Fatal(err)
	}
	if err := e.f.SetSMUp(true); err != nil {
		t.Fatal(err)
	}
	e.settle()
	plainA, _ := ib.MCMemberQuery(broadcastMGID, a.gid(), ib.PKeyDefault, ib.JoinFullMember)
	if _, st := e.join(a, plainA, mask); st != 0 {
		t.Errorf("plain join after an SM restart: status %v, want the group made again", st)
	}
}

// TestIPoIBPartitionsInvalid refuses a P_Key that names no partition.
func TestIPoIBPartitionsInvalid(t *testing.T) {
	c := Config{IPoIBPartitions: []ib.PKey{0x8000}}
	if err := c.fill(); err == nil {
		t.Error("IPoIBPartitions with 0x8000 accepted")
	}
}

// TestCreatedGroupKeepsCreatorsRecord: a group made by a join keeps the
// PacketLifeTime and Scope fields of the creator's record as sent, named
// in the component mask or not, as OpenSM does (smtest's
// TestSimAnswersAsOpenSM sees 0 and 0 for the group an IPoIB link
// creates); the MGID keeps its own scope.
func TestCreatedGroupKeepsCreatorsRecord(t *testing.T) {
	e := newEnv(t, Config{})
	hosts := e.star(1, HostConfig{})
	a := e.open(hosts[0], 1)
	for i, tc := range []struct {
		name       string
		plt, scope uint8
		mask       ib.ComponentMask
	}{
		{"neither named, both zero (an IPoIB join)", 0, 0, 0},
		{"neither named, both set", 20, 5, 0},
		{"both named", 19, 2, ib.MCMemberCompPacketLifeTimeSelector | ib.MCMemberCompPacketLifeTime | ib.MCMemberCompScope},
	} {
		mgid := broadcastMGID
		mgid[15] = byte(i) // another IPoIB-style group per case
		r, mask := createJoin(mgid, a.gid(), ib.PKeyDefault, ib.QKeyIPoIBDefault)
		r.PacketLifeTimeSelector, r.PacketLifeTime, r.Scope = ib.SelectorExactly, tc.plt, tc.scope
		got, st := e.join(a, r, mask|tc.mask)
		if st != 0 {
			t.Errorf("%s: status %v", tc.name, st)
			continue
		}
		if got.PacketLifeTime != tc.plt || got.PacketLifeTimeSelector != ib.SelectorExactly || got.Scope != tc.scope || got.MGID != mgid {
			t.Errorf("%s: group %v PacketLifeTime %v %d Scope %d, want %v = %d Scope %d",
				tc.name, got.MGID, got.PacketLifeTimeSelector, got.PacketLifeTime, got.Scope, mgid, tc.plt, tc.scope)
		}
	}
}
