package vmtest

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// cpioHeader writes one newc header the long way, field by field, as the
// format description lists them.
func cpioHeader(ino, mode, nlink, filesize, namesize string) string {
	z := "00000000"
	return "070701" + ino + mode + z + z + nlink + z + filesize + z + z + z + z + namesize + z
}

func TestArchiveGolden(t *testing.T) {
	trailer := cpioHeader("00000000", "00000000", "00000001", "00000000", "0000000b") + "TRAILER!!!\x00" + "\x00\x00\x00"
	tests := []struct {
		name  string
		build func(a *Archive) error
		want  string
	}{
		{
			name:  "one file",
			build: func(a *Archive) error { return a.File("/a", []byte("hi\n"), 0o644) },
			// 110-byte header + "a\0" = 112, aligned; data 3 bytes + 1 pad.
			want: cpioHeader("00000001", "000081a4", "00000001", "00000003", "00000002") + "a\x00" + "hi\n\x00" + trailer,
		},
		{
			name:  "symlink in implicit dir",
			build: func(a *Archive) error { return a.Symlink("/d/l", "x") },
			// "d" (040755, 2 links): 110 + "d\0" = 112. "d/l" (0120777):
			// 110 + "d/l\0" = 114, 2 pad; target "x" + 3 pad.
			want: cpioHeader("00000001", "000041ed", "00000002", "00000000", "00000002") + "d\x00" +
				cpioHeader("00000002", "0000a1ff", "00000001", "00000001", "00000004") + "d/l\x00" + "\x00\x00" + "x\x00\x00\x00" +
				trailer,
		},
		{
			name:  "empty",
			build: func(a *Archive) error { return nil },
			want:  trailer,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := NewArchive()
			if err := tc.build(a); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			n, err := a.WriteTo(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(buf.Len()) || buf.Len()%4 != 0 {
				t.Errorf("WriteTo reported %d bytes, wrote %d (must be a multiple of 4)", n, buf.Len())
			}
			if got := buf.String(); got != tc.want {
				t.Errorf("archive\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestArchiveBadPaths(t *testing.T) {
	a := NewArchive()
	for _, p := range []string{"", "rel", "/", "/..", "/."} {
		if err := a.File(p, nil, 0o644); !errors.Is(err, ErrBadPath) {
			t.Errorf("File(%q) = %v, want ErrBadPath", p, err)
		}
	}
	if err := a.Symlink("/x", ""); !errors.Is(err, ErrBadPath) {
		t.Errorf("Symlink with empty target = %v, want ErrBadPath", err)
	}
	if err := a.File("/a/../b", nil, 0o600); err != nil || !a.Has("/b") {
		t.Errorf("File(/a/../b) = %v, Has(/b) = %v", err, a.Has("/b"))
	}
}

// modulesDep is an excerpt of depmod's output for the 6.1 Debian kernel.
const modulesDep = `kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko: kernel/drivers/infiniband/core/ib_uverbs.ko kernel/drivers/infiniband/core/ib_core.ko kernel/net/ipv6/ip6_udp_tunnel.ko kernel/net/ipv4/udp_tunnel.ko
kernel/drivers/infiniband/core/ib_uverbs.ko: kernel/drivers/infiniband/core/ib_core.ko
kernel/drivers/infiniband/core/ib_core.ko:
kernel/net/ipv6/ip6_udp_tunnel.ko:
kernel/net/ipv4/udp_tunnel.ko:
kernel/crypto/crc32_generic.ko:
kernel/drivers/infiniband/core/ib_umad.ko: kernel/drivers/infiniband/core/ib_core.ko
kernel/net/9p/9pnet-virtio.ko.xz: kernel/net/9p/9pnet.ko.xz
kernel/net/9p/9pnet.ko.xz:
`

func TestLoadOrder(t *testing.T) {
	deps, err := parseModulesDep(strings.NewReader(modulesDep))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		names []string
		want  []string
	}{
		{
			[]string{"crc32_generic", "rdma_rxe", "ib_uverbs", "ib_umad"},
			[]string{
				"kernel/crypto/crc32_generic.ko",
				"kernel/net/ipv4/udp_tunnel.ko",
				"kernel/net/ipv6/ip6_udp_tunnel.ko",
				"kernel/drivers/infiniband/core/ib_core.ko",
				"kernel/drivers/infiniband/core/ib_uverbs.ko",
				"kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko",
				"kernel/drivers/infiniband/core/ib_umad.ko",
			},
		},
		{
			[]string{"9pnet-virtio"},
			[]string{"kernel/net/9p/9pnet.ko.xz", "kernel/net/9p/9pnet-virtio.ko.xz"},
		},
	}
	for _, tc := range tests {
		got, err := loadOrder(deps, tc.names)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("loadOrder(%v) =\n%v\nwant\n%v", tc.names, got, tc.want)
		}
	}
	if _, err := loadOrder(deps, []string{"nosuch"}); err == nil {
		t.Error("unknown module accepted")
	}
	cyc, _ := parseModulesDep(strings.NewReader("a.ko: b.ko\nb.ko: a.ko\n"))
	if _, err := loadOrder(cyc, []string{"a"}); err == nil {
		t.Error("dependency cycle accepted")
	}
	if _, err := parseModulesDep(strings.NewReader("no colon here\n")); err == nil {
		t.Error("malformed modules.dep accepted")
	}
}

func TestParseLDD(t *testing.T) {
	out := `	linux-vdso.so.1 (0x00007ffd5a9f2000)
	libibverbs.so.1 => /lib/x86_64-linux-gnu/libibverbs.so.1 (0x00007f434ed84000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f434eba2000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f434edc1000)
`
	got, err := parseLDD([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib/x86_64-linux-gnu/libibverbs.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseLDD = %v, want %v", got, want)
	}
	if _, err := parseLDD([]byte("\tlibfoo.so.1 => not found\n")); err == nil {
		t.Error("missing library accepted")
	}
}

func TestParseExit(t *testing.T) {
	tests := []struct {
		log  string
		want int
	}{
		{"boot...\nVMTEST-EXIT=0\n[ 3.2] reboot: Power down\n", 0},
		{"VMTEST-EXIT=2\r\n", 2},
		{"test output\nVMTEST-EXIT=1\nVMTEST-EXIT=0\n", 0}, // the last one counts
		{"Kernel panic - not syncing\n", -1},
		{"VMTEST-EXIT=\n", -1},
		{"", -1},
	}
	for _, tc := range tests {
		if got := ParseExit([]byte(tc.log)); got != tc.want {
			t.Errorf("ParseExit(%q) = %d, want %d", tc.log, got, tc.want)
		}
	}
}

func TestInitScript(t *testing.T) {
	s, err := InitScript("6.1.0-56-amd64", []string{"kernel/a.ko", "kernel/b.ko"}, 2200,
		[]VM{{Name: "vm0", Script: "true"}, {Name: "vm1", Script: "false"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"#!/usr/bin/busybox sh\n",
		"insmod /usr/lib/modules/6.1.0-56-amd64/kernel/a.ko",
		"/usr/sbin/ip link set eth0 mtu 2200 up",
		"rdma link add rxe0 type rxe netdev eth0",
		"vm0) sh /vmtest/vm0.sh ;;",
		"vm1) sh /vmtest/vm1.sh ;;",
		`echo "VMTEST-EXIT=$?"`,
		"poweroff -f",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("init script lacks %q:\n%s", want, s)
		}
	}
	if a, b := strings.Index(s, "kernel/a.ko"), strings.Index(s, "kernel/b.ko"); a < 0 || b < a {
		t.Error("modules out of order")
	}
}
