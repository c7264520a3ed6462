package verbs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/Mellanox/rdmamap"

	"github.com/ipoibd/ipoibd/ib"
)

// fakeClassDir points rdmamap at a made-up /sys/class/infiniband for the
// test: the kernel's layout (a link per device, ports/N/state and
// link_layer, node_guid) without a kernel that has RDMA.
func fakeClassDir(t *testing.T, files map[string]string) {
	t.Helper()
	root := t.TempDir()
	class := filepath.Join(root, "class")
	devs := filepath.Join(root, "devices")
	for path, body := range files {
		p := filepath.Join(devs, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(class, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(devs)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		// sysfs class entries are symlinks, which rdmamap relies on.
		if err := os.Symlink(filepath.Join(devs, e.Name()), filepath.Join(class, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	old := rdmamap.RdmaClassDir
	rdmamap.RdmaClassDir = class
	t.Cleanup(func() { rdmamap.RdmaClassDir = old })
}

func TestSysfsDevices(t *testing.T) {
	fakeClassDir(t, map[string]string{
		"rxe0/node_guid":             "5054:00ff:fe12:3456\n",
		"rxe0/ports/1/state":         "4: ACTIVE\n",
		"rxe0/ports/1/link_layer":    "Ethernet\n",
		"mlx5_0/node_guid":           "0002:c903:0001:7d4c\n",
		"mlx5_0/ports/1/state":       "1: DOWN\n",
		"mlx5_0/ports/1/link_layer":  "InfiniBand\n",
		"mlx5_0/ports/2/state":       "4: ACTIVE\n",
		"mlx5_0/ports/2/link_layer":  "InfiniBand\n",
		"mlx5_0/ports/10/state":      "2: INIT\n",
		"mlx5_0/ports/10/link_layer": "InfiniBand\n",
		"broken/ports/1/state":       "garbage",
		"broken/ports/1/link_layer":  "",
		"broken/node_guid":           "not a guid",
	})
	devs := sysfsDevices()
	if len(devs) != 3 {
		t.Fatalf("sysfsDevices() = %+v, want 3 devices", devs)
	}
	byName := map[string]ib.DeviceInfo{}
	for _, d := range devs {
		if d.Driver != DriverName {
			t.Errorf("%s: driver %q, want %q", d.Name, d.Driver, DriverName)
		}
		byName[d.Name] = d
	}
	tests := []struct {
		name  string
		guid  ib.GUID
		ports []ib.PortAttr
	}{
		{"rxe0", 0x505400fffe123456, []ib.PortAttr{{Num: 1, State: ib.PortState(4), LinkLayer: ib.LinkLayerEthernet}}},
		{"mlx5_0", 0x0002c90300017d4c, []ib.PortAttr{
			{Num: 1, State: ib.PortState(1), LinkLayer: ib.LinkLayerInfiniBand},
			{Num: 2, State: ib.PortState(4), LinkLayer: ib.LinkLayerInfiniBand},
			{Num: 10, State: ib.PortState(2), LinkLayer: ib.LinkLayerInfiniBand},
		}},
		{"broken", 0, []ib.PortAttr{{Num: 1, State: 0, LinkLayer: ib.LinkLayerInfiniBand}}},
	}
	for _, tt := range tests {
		d, ok := byName[tt.name]
		if !ok {
			t.Errorf("%s missing", tt.name)
			continue
		}
		if d.NodeGUID != tt.guid {
			t.Errorf("%s: node GUID %v, want %v", tt.name, d.NodeGUID, tt.guid)
		}
		if len(d.Ports) != len(tt.ports) {
			t.Errorf("%s: ports %+v, want %+v", tt.name, d.Ports, tt.ports)
			continue
		}
		for i := range tt.ports {
			got, want := d.Ports[i], tt.ports[i]
			if got.Num != want.Num || got.State != want.State || got.LinkLayer != want.LinkLayer {
				t.Errorf("%s port %d: %+v, want %+v", tt.name, i, got, want)
			}
		}
	}
}

func TestSysfsNoRDMA(t *testing.T) {
	old := rdmamap.RdmaClassDir
	rdmamap.RdmaClassDir = filepath.Join(t.TempDir(), "absent")
	t.Cleanup(func() { rdmamap.RdmaClassDir = old })
	if devs := sysfsDevices(); devs != nil {
		t.Errorf("sysfsDevices() = %+v on a kernel without RDMA, want nil", devs)
	}
}

// TestProbeUnavailableListsSysfs: where the driver cannot run (not built
// in, built without the headers, libibverbs missing) Probe still lists
// what sysfs shows, with an error wrapping ib.ErrUnavailable. In a build
// whose driver can run this is skipped.
func TestProbeUnavailableListsSysfs(t *testing.T) {
	if loadErr() == nil {
		t.Skip("the verbs driver can run in this build and on this machine")
	}
	fakeClassDir(t, map[string]string{
		"rxe0/node_guid":          "5054:00ff:fe12:3456\n",
		"rxe0/ports/1/state":      "4: ACTIVE\n",
		"rxe0/ports/1/link_layer": "Ethernet\n",
	})
	devs, err := Probe()
	if !errors.Is(err, ib.ErrUnavailable) {
		t.Fatalf("Probe() error = %v, want one wrapping ib.ErrUnavailable", err)
	}
	if len(devs) != 1 || devs[0].Name != "rxe0" {
		t.Errorf("Probe() = %+v, want rxe0 from sysfs", devs)
	}
}
