package smtest_test

import (
	"fmt"
	"log"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/sim"
	"github.com/ipoibd/ipoibd/smtest"
)

// An IPoIB link whose control plane is OpenSM's, on HCA "Hca2" of an
// ibsim started with IBSIM_SOCKNAME=sim and managed by an OpenSM, and
// whose data plane is a simulator host made to look like that HCA (its
// port GUID, OpenSM's LID, the P_Key table). The link joins OpenSM's
// broadcast group and resolves its paths at OpenSM; its frames travel
// through the simulator. A second host on the same fabric, built the
// same way, is its peer (TestTwoHostsEndToEnd).
func ExampleNewSplitDevice() {
	loop, err := aio.New(aio.WithName("example"))
	if err != nil {
		log.Fatal(err)
	}
	stop := loop.Start()
	defer func() { _ = stop() }()

	// The devices and the link are built on the loop.
	up := func() error {
		port, err := smtest.DialIBSim(loop, "sim", "Hca2", 1)
		if err != nil {
			return err
		}
		attr, err := port.PortAttr()
		if err != nil {
			return err
		}
		// ibsim's links: 4x SDR, 2048-byte MTU.
		fab, err := sim.New(loop, sim.Config{Name: "wire", MTU: ib.MTU2048, Rate: ib.Rate10Gbps,
			IPoIBPartitions: []ib.PKey{ib.PKeyDefault}})
		if err != nil {
			return err
		}
		sw, err := fab.AddSwitch("sw", sim.SwitchConfig{})
		if err != nil {
			return err
		}
		host, err := fab.AddHost("Hca2", sim.HostConfig{PortGUIDs: []ib.GUID{attr.GUID()}, LIDs: []ib.LID{attr.LID}, PKeys: attr.PKeys[:1]})
		if err != nil {
			return err
		}
		if _, err := fab.Connect(host, sw, sim.CableConfig{}); err != nil {
			return err
		}
		if err := fab.Start(); err != nil {
			return err
		}
		data, err := host.Open(loop)
		if err != nil {
			return err
		}
		link, err := ipoib.New(loop, smtest.NewSplitDevice(data, attr, port), ipoib.Config{Name: "ib0"})
		if err != nil {
			return err
		}
		fmt.Println("joining the broadcast group at OpenSM, LID", attr.LID)
		return link.NetDev().Open()
	}
	if err := loop.Call("up", func() { err = up() }); err != nil {
		log.Fatal(err)
	}
	if err != nil {
		log.Fatal(err)
	}
}
