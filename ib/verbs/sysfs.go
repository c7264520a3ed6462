package verbs

// Finding devices without libibverbs: the RDMA devices the kernel
// registered and their network interfaces, read from sysfs through
// github.com/Mellanox/rdmamap. "ipoibd devices" lists them in every build,
// so a machine whose verbs driver cannot run (not built in, libibverbs
// missing) still shows what it has. Any goroutine.

import (
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/Mellanox/rdmamap"

	"github.com/ipoibd/ipoibd/ib"
)

// DriverName is the name the driver registers in the ib driver table.
const DriverName = "verbs"

// sysfsDevices lists every RDMA device in sysfs with its node GUID, its
// network interface (RoCE) and, per port, the state and link layer; it
// returns nil on a kernel without RDMA. LIDs, GIDs and P_Keys need
// libibverbs and stay empty.
func sysfsDevices() []ib.DeviceInfo {
	names := rdmamap.GetRdmaDeviceList()
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	netdevs := sysfsNetdevs()
	var out []ib.DeviceInfo
	for _, name := range names {
		d := ib.DeviceInfo{Driver: DriverName, Name: name, NetDev: netdevs[name]}
		d.NodeGUID, _ = parseSysfsGUID(readSysfs(name, "node_guid"))
		ports := rdmamap.GetPorts(name)
		sort.Slice(ports, func(i, j int) bool { return atoi(ports[i]) < atoi(ports[j]) })
		for _, p := range ports {
			dir := filepath.Join("ports", p)
			d.Ports = append(d.Ports, ib.PortAttr{
				Num:       atoi(p),
				State:     ib.PortState(atoi(readSysfs(name, dir, "state"))),
				LinkLayer: sysfsLinkLayer(readSysfs(name, dir, "link_layer")),
			})
		}
		out = append(out, d)
	}
	return out
}

// sysfsNetdevs maps each RDMA device to the first network interface of
// this namespace that rdmamap ties to it.
func sysfsNetdevs() map[string]string {
	out := map[string]string{}
	if len(rdmamap.GetRdmaDeviceList()) == 0 {
		return out
	}
	ifcs, err := net.Interfaces()
	if err != nil {
		return out
	}
	for _, ifc := range ifcs {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		dev, err := rdmamap.GetRdmaDeviceForNetdevice(ifc.Name)
		if err != nil || dev == "" {
			continue
		}
		if _, seen := out[dev]; !seen {
			out[dev] = ifc.Name
		}
	}
	return out
}

// readSysfs reads one attribute file of an RDMA device, trimmed; "" if
// it cannot.
func readSysfs(dev string, path ...string) string {
	b, err := os.ReadFile(filepath.Join(append([]string{rdmamap.RdmaClassDir, dev}, path...)...))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// parseSysfsGUID reads sysfs's GUID form, four groups of four hex digits
// separated by colons ("0002:c903:0001:7d4c").
func parseSysfsGUID(s string) (ib.GUID, bool) {
	b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
	if err != nil || len(b) != 8 {
		return 0, false
	}
	var g uint64
	for _, x := range b {
		g = g<<8 | uint64(x)
	}
	return ib.GUID(g), true
}

// sysfsLinkLayer reads a port's link_layer file ("InfiniBand",
// "Ethernet").
func sysfsLinkLayer(s string) ib.LinkLayer {
	if strings.EqualFold(s, "ethernet") {
		return ib.LinkLayerEthernet
	}
	return ib.LinkLayerInfiniBand
}

// atoi reads the leading decimal number of s ("4: ACTIVE" gives 4), or 0.
func atoi(s string) int {
	end := 0
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n, _ := strconv.Atoi(s[:end])
	return n
}
