package smtest

// The simulator's SM and SA against OpenSM: the same joins and path
// queries on the same topology, answer by answer.

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/sim"
)

// simSubnet is testdata/fabric.net built in the simulator: two switches
// joined by two cables, Hca1 and Hca3 on SwA, Hca2 and Hca4 on SwB, SM on
// Hca1, every link 4x SDR with a 2048-byte MTU as ibsim's are.
type simSubnet struct {
	loop *aio.Context
	fab  *sim.Fabric
	devs map[string]ib.Device
}

// newSimSubnet builds and starts it; its loop runs on a goroutine until
// the test ends.
func newSimSubnet(t *testing.T) *simSubnet {
	t.Helper()
	loop, err := aio.New(aio.WithName("smtest-sim"))
	if err != nil {
		t.Fatal(err)
	}
	stop := loop.Start()
	ss := &simSubnet{loop: loop, devs: map[string]ib.Device{}}
	t.Cleanup(func() {
		_ = loop.Call("close", func() {
			for _, d := range ss.devs {
				_ = d.Close()
			}
			if ss.fab != nil {
				_ = ss.fab.Close()
			}
		})
		_ = stop()
	})
	err = nil
	_ = loop.Call("build", func() { err = ss.build(t.Name()) })
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

// build makes the fabric on the loop.
func (ss *simSubnet) build(name string) error {
	// OpenSM makes the default partition's IPoIB broadcast group when it
	// starts; IPoIBPartitions asks the simulator's SM to do the same.
	f, err := sim.New(ss.loop, sim.Config{Name: fmt.Sprintf("cmp%p", ss), MTU: ib.MTU2048, Rate: ib.Rate10Gbps, SMNode: "Hca1",
		IPoIBPartitions: []ib.PKey{ib.PKeyDefault}})
	if err != nil {
		return err
	}
	ss.fab = f
	swA, err := f.AddSwitch("SwA", sim.SwitchConfig{Ports: 8})
	if err != nil {
		return err
	}
	swB, err := f.AddSwitch("SwB", sim.SwitchConfig{Ports: 8})
	if err != nil {
		return err
	}
	for _, p := range []int{3, 5} {
		if _, err := f.Connect(swA, swB, sim.CableConfig{APort: p, BPort: p}); err != nil {
			return err
		}
	}
	for _, h := range []struct {
		name string
		sw   *sim.Switch
		port int
	}{{"Hca1", swA, 1}, {"Hca3", swA, 2}, {"Hca2", swB, 1}, {"Hca4", swB, 2}} {
		host, err := f.AddHost(h.name, sim.HostConfig{})
		if err != nil {
			return err
		}
		if _, err := f.Connect(host, h.sw, sim.CableConfig{APort: 1, BPort: h.port}); err != nil {
			return err
		}
	}
	if err := f.Start(); err != nil {
		return err
	}
	for _, h := range []string{"Hca2", "Hca4"} {
		d, err := f.Host(h).Open(ss.loop)
		if err != nil {
			return err
		}
		// The simulator has one MAD port per port: share it between the
		// link and the test's own SA client.
		attr, err := d.QueryPort(1)
		if err != nil {
			return err
		}
		mad, err := d.OpenMADPort(1)
		if err != nil {
			return err
		}
		ss.devs[h] = NewSplitDevice(d, attr, mad)
	}
	return nil
}

// sa opens an SA client on a host's device.
func (ss *simSubnet) sa(t *testing.T, host string) (*ib.SAClient, ib.PortAttr) {
	t.Helper()
	var c *ib.SAClient
	var attr ib.PortAttr
	var err error
	_ = ss.loop.Call("sa", func() {
		d := ss.devs[host]
		if attr, err = d.QueryPort(1); err != nil {
			return
		}
		var port ib.MADPort
		if port, err = d.OpenMADPort(1); err != nil {
			return
		}
		c, err = ib.NewSAClient(ss.loop, port, attr, ib.SAClientConfig{})
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, attr
}

// knownDifferences are the answer fields in which the simulator knowingly
// differs from OpenSM, each with its reason (docs/protocol.md, "The
// simulator's SM and SA next to OpenSM").
var knownDifferences = map[string]string{}

// compareFields reports every field of two records that differs, except
// the addresses (LIDs and GIDs depend on who assigned them) and the known
// differences.
func compareFields(t *testing.T, what string, simRec, osmRec any, skip ...string) {
	t.Helper()
	sv, ov := reflect.ValueOf(simRec), reflect.ValueOf(osmRec)
	for i := range sv.NumField() {
		name := sv.Type().Field(i).Name
		if contains(skip, name) {
			continue
		}
		a, b := sv.Field(i).Interface(), ov.Field(i).Interface()
		if reflect.DeepEqual(a, b) {
			continue
		}
		if why, ok := knownDifferences[what+"."+name]; ok {
			t.Logf("%s.%s: simulator %v, OpenSM %v (known: %s)", what, name, a, b, why)
			continue
		}
		t.Errorf("%s.%s: simulator answers %v, OpenSM %v", what, name, a, b)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// cmpGroup is the IPv4 group TestSimAnswersAsOpenSM has the link create.
const cmpGroup = "239.1.2.3"

// TestSimAnswersAsOpenSM joins the broadcast group with a plain join
// (no creation components) on a fresh subnet, brings the IPoIB link up on
// Hca2, has it create an IPv4 group, and asks the SA for Hca2's records
// of both groups and its path to Hca4, once on OpenSM and once on the
// simulator, and compares the answers field by field.
func TestSimAnswersAsOpenSM(t *testing.T) {
	s, ch, _ := started(t, "")
	osmFirst := ch.do("sajoin 0xffff").MC
	osmGroup := ch.do("up 0xffff").Group
	osmMC := ch.do("sajoin 0xffff").MC
	ch.do("join " + cmpGroup)
	osmIP := ch.do("sajoin 0xffff " + cmpGroup).MC
	osmPath := ch.do("path " + s.portGID(t, "Hca4").String()).Path

	ss := newSimSubnet(t)
	sa, attr := ss.sa(t, "Hca2")
	_, attr4 := ss.sa(t, "Hca4")
	type mcAnswer struct {
		r   ib.MCMemberRecord
		err error
	}
	mcDone := make(chan mcAnswer, 1)
	join := func(mgid ib.GID) mcAnswer {
		_ = ss.loop.Call("join", func() {
			q, mask := ib.MCMemberQuery(mgid, attr.GIDs[0], ib.PKeyDefault, ib.JoinFullMember)
			if _, err := sa.SetMCMemberRecord(q, mask, func(r ib.MCMemberRecord, err error) { mcDone <- mcAnswer{r, err} }); err != nil {
				mcDone <- mcAnswer{err: err}
			}
		})
		return <-mcDone
	}
	bcast := ipoib.BroadcastGID(ib.PKeyDefault)
	first := join(bcast)
	if first.err != nil {
		t.Fatalf("simulator: plain join on a fresh subnet: %v (OpenSM answers it)", first.err)
	}
	compareFields(t, "first MCMemberRecord", first.r, *osmFirst, "PortGID")

	var link *ipoib.Link
	var err error
	_ = ss.loop.Call("up", func() {
		link, err = ipoib.New(ss.loop, ss.devs["Hca2"], ipoib.Config{Name: fmt.Sprintf("cmp%d", subnetSeq.Add(1))})
		if err == nil {
			err = link.NetDev().Open()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ss.loop.Call("close link", func() { _ = link.Close() }) })
	var simGroup ipoib.GroupInfo
	deadline := time.Now().Add(20 * time.Second)
	for !simGroup.Joined {
		if time.Now().After(deadline) {
			t.Fatal("simulator: broadcast group not joined")
		}
		time.Sleep(20 * time.Millisecond)
		_ = ss.loop.Call("group", func() { simGroup = link.Group() })
	}
	type pathAnswer struct {
		r   ib.PathRecord
		err error
	}
	pathDone := make(chan pathAnswer, 1)
	mc := join(bcast)
	ipMC := join(simJoinIPv4(t, ss.loop, link, netip.MustParseAddr(cmpGroup)))
	_ = ss.loop.Call("ask", func() {
		pq, pmask := ib.PathQueryByGID(attr.GIDs[0], attr4.GIDs[0], ib.PKeyDefault)
		if _, err := sa.GetPathRecord(pq, pmask, func(r ib.PathRecord, err error) { pathDone <- pathAnswer{r, err} }); err != nil {
			pathDone <- pathAnswer{err: err}
		}
	})
	path := <-pathDone
	if mc.err != nil || ipMC.err != nil || path.err != nil {
		t.Fatalf("simulator SA: join %v, IPv4 group join %v, path %v", mc.err, ipMC.err, path.err)
	}
	t.Logf("OpenSM:    group %+v\n           IPv4 group %+v\n           path %+v", *osmMC, *osmIP, *osmPath)
	t.Logf("simulator: group %+v\n           IPv4 group %+v\n           path %+v", mc.r, ipMC.r, path.r)
	compareFields(t, "GroupInfo", simGroup, *osmGroup, "MGID", "JoinedAt")
	compareFields(t, "MCMemberRecord", mc.r, *osmMC, "PortGID")
	compareFields(t, "IPv4 MCMemberRecord", ipMC.r, *osmIP, "PortGID")
	compareFields(t, "PathRecord", path.r, *osmPath, "DGID", "SGID", "DLID", "SLID")
}

// simJoinIPv4 has link join the IPv4 group ip, creating it, and waits
// until its peer cache shows the group joined; it returns the group's
// MGID.
func simJoinIPv4(t *testing.T, loop *aio.Context, link *ipoib.Link, ip netip.Addr) ib.GID {
	t.Helper()
	mgid, err := ipoib.IPv4MulticastGID(link.PKey(), ip)
	if err != nil {
		t.Fatal(err)
	}
	var hw []byte
	_ = loop.Call("join "+ip.String(), func() {
		if err = link.JoinMulticast(ip); err == nil {
			hw, err = link.Multicast(ip, nil)
		}
	})
	if err != nil {
		t.Fatalf("simulator: join %v: %v", ip, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		state := ""
		_ = loop.Call("peers", func() {
			peers, _ := link.Peers()
			for _, p := range peers {
				if p.Multicast && p.Addr == link.AddrString(hw) {
					state = p.State
				}
			}
		})
		if state == "joined" {
			return mgid
		}
		if time.Now().After(deadline) {
			t.Fatalf("simulator: group %v still %q after 20s", ip, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
