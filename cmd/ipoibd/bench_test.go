package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// BenchmarkSimDemo runs the built ipoibd's simulator demo as a user would
// (`ipoibd sim --hosts N --json`), one process per op, and reports its
// wall time, its peak resident memory and the datagrams the fabric dropped
// for want of a receive buffer. Run the large size with -benchtime 1x:
//
//	go test -run '^$' -bench 'SimDemo/hosts=1024' -benchtime 1x ./cmd/ipoibd
func BenchmarkSimDemo(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "ipoibd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	for _, hosts := range []int{256, 1024} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) {
			var rssMB, noBuf, wallS float64
			for range b.N {
				cmd := exec.Command(bin, "sim", "--hosts", fmt.Sprint(hosts), "--json")
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				var rep simReport
				if jerr := json.Unmarshal(stdout.Bytes(), &rep); jerr != nil {
					b.Fatalf("ipoibd sim --hosts %d: %v (%v)\n%s", hosts, jerr, err, stderr.String())
				}
				if !rep.OK {
					b.Errorf("ipoibd sim --hosts %d did not succeed: %+v", hosts, rep.Totals)
				}
				if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
					rssMB += float64(ru.Maxrss) / 1024 // kilobytes on Linux
				}
				noBuf += float64(rep.Fabric.Drops["no-recv-buffer"])
				wallS += rep.ElapsedMs / 1000
			}
			n := float64(b.N)
			b.ReportMetric(wallS/n, "wall-s")
			b.ReportMetric(rssMB/n, "maxrss-MB")
			b.ReportMetric(noBuf/n, "no-recv-buffer-drops")
		})
	}
}
