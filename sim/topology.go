package sim

import (
	"fmt"

	"github.com/ipoibd/ipoibd/aio"
)

// Star builds and starts a fabric of n hosts, "host0" to "host<n-1>", on
// one switch "sw0" that also runs the SM. The switch gets as many ports
// as it needs.
func Star(loop *aio.Context, cfg Config, n int) (*Fabric, []*Host, error) {
	if n < 1 || n > MaxSwitchPorts {
		return nil, nil, fmt.Errorf("sim: star of %d hosts (1..%d): %w", n, MaxSwitchPorts, ErrBadConfig)
	}
	return newBuilt(loop, cfg, func(f *Fabric) ([]*Host, error) { return f.buildStar(n) })
}

// newBuilt makes a fabric with New and has build add its nodes and start
// it; a fabric build fails on is closed.
func newBuilt(loop *aio.Context, cfg Config, build func(*Fabric) ([]*Host, error)) (*Fabric, []*Host, error) {
	f, err := New(loop, cfg)
	if err != nil {
		return nil, nil, err
	}
	hosts, err := build(f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, hosts, nil
}

func (f *Fabric) buildStar(n int) ([]*Host, error) {
	sw, err := f.AddSwitch("sw0", SwitchConfig{Ports: max(n, DefaultSwitchPorts)})
	if err != nil {
		return nil, err
	}
	hosts := make([]*Host, n)
	for i := range hosts {
		if hosts[i], err = f.AddHost(fmt.Sprintf("host%d", i), HostConfig{}); err != nil {
			return nil, err
		}
		if _, err = f.Connect(hosts[i], sw, CableConfig{}); err != nil {
			return nil, err
		}
	}
	return hosts, f.Start()
}

// TreeConfig shapes a two-level fat tree.
type TreeConfig struct {
	// Leaves is the number of leaf switches, "leaf0"...
	Leaves int
	// HostsPerLeaf is the number of hosts on each leaf; hosts are named
	// "host0"... across the leaves in order.
	HostsPerLeaf int
	// Spines is the number of spine switches, "spine0"...; each is cabled
	// once to every leaf. The SM runs on spine0. 0 means 1.
	Spines int
}

// Tree builds and starts a two-level tree: spines on top, every leaf
// cabled to every spine, hosts on the leaves. It is the topology for many
// hosts: 32 leaves of 32 hosts make 1024.
func Tree(loop *aio.Context, cfg Config, tc TreeConfig) (*Fabric, []*Host, error) {
	if tc.Spines == 0 {
		tc.Spines = 1
	}
	switch {
	case tc.Leaves < 1 || tc.HostsPerLeaf < 1 || tc.Spines < 1:
		return nil, nil, fmt.Errorf("sim: tree %+v: counts must be positive: %w", tc, ErrBadConfig)
	case tc.HostsPerLeaf+tc.Spines > MaxSwitchPorts || tc.Leaves > MaxSwitchPorts:
		return nil, nil, fmt.Errorf("sim: tree %+v: more than %d ports on a switch: %w", tc, MaxSwitchPorts, ErrBadConfig)
	}
	return newBuilt(loop, cfg, func(f *Fabric) ([]*Host, error) { return f.buildFatTree(tc) })
}

func (f *Fabric) buildFatTree(tc TreeConfig) ([]*Host, error) {
	spines := make([]*Switch, tc.Spines)
	var err error
	for i := range spines {
		if spines[i], err = f.AddSwitch(fmt.Sprintf("spine%d", i), SwitchConfig{Ports: max(tc.Leaves, 1)}); err != nil {
			return nil, err
		}
	}
	hosts := make([]*Host, 0, tc.Leaves*tc.HostsPerLeaf)
	for l := range tc.Leaves {
		leaf, err := f.AddSwitch(fmt.Sprintf("leaf%d", l), SwitchConfig{Ports: tc.HostsPerLeaf + tc.Spines})
		if err != nil {
			return nil, err
		}
		for _, s := range spines {
			if _, err := f.Connect(leaf, s, CableConfig{}); err != nil {
				return nil, err
			}
		}
		for range tc.HostsPerLeaf {
			h, err := f.AddHost(fmt.Sprintf("host%d", len(hosts)), HostConfig{})
			if err != nil {
				return nil, err
			}
			if _, err := f.Connect(h, leaf, CableConfig{}); err != nil {
				return nil, err
			}
			hosts = append(hosts, h)
		}
	}
	return hosts, f.Start()
}

// ClusterHostsPerLeaf is how many hosts Cluster puts on a leaf switch once
// one switch is not enough.
const ClusterHostsPerLeaf = 32

// Cluster builds and starts a fabric of n hosts, "host0"..., each made with
// hc: one switch "sw0" when they fit on it, otherwise leaves of
// ClusterHostsPerLeaf hosts ("leaf0"...) under one spine "spine0", the last
// leaf holding the rest. It is the shape for any n, where Star and Tree
// each fit some.
func Cluster(loop *aio.Context, cfg Config, n int, hc HostConfig) (*Fabric, []*Host, error) {
	if n < 1 {
		return nil, nil, fmt.Errorf("sim: cluster of %d hosts: %w", n, ErrBadConfig)
	}
	f, err := New(loop, cfg)
	if err != nil {
		return nil, nil, err
	}
	hosts, err := f.buildCluster(n, hc)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, hosts, nil
}

func (f *Fabric) buildCluster(n int, hc HostConfig) ([]*Host, error) {
	var leaves []*Switch
	if n < MaxSwitchPorts {
		sw, err := f.AddSwitch("sw0", SwitchConfig{Ports: max(n, DefaultSwitchPorts)})
		if err != nil {
			return nil, err
		}
		leaves = append(leaves, sw)
	} else {
		spine, err := f.AddSwitch("spine0", SwitchConfig{Ports: (n + ClusterHostsPerLeaf - 1) / ClusterHostsPerLeaf})
		if err != nil {
			return nil, err
		}
		for i := 0; i*ClusterHostsPerLeaf < n; i++ {
			leaf, err := f.AddSwitch(fmt.Sprintf("leaf%d", i), SwitchConfig{Ports: ClusterHostsPerLeaf + 1})
			if err != nil {
				return nil, err
			}
			if _, err := f.Connect(leaf, spine, CableConfig{}); err != nil {
				return nil, err
			}
			leaves = append(leaves, leaf)
		}
	}
	hosts := make([]*Host, n)
	for i := range hosts {
		var err error
		if hosts[i], err = f.AddHost(fmt.Sprintf("host%d", i), hc); err != nil {
			return nil, err
		}
		if _, err := f.Connect(hosts[i], leaves[min(i/ClusterHostsPerLeaf, len(leaves)-1)], CableConfig{}); err != nil {
			return nil, err
		}
	}
	return hosts, f.Start()
}
