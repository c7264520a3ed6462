package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/ipoibd/ipoibd/ib"
)

// versionJSON is what --version --json prints.
type versionJSON struct {
	Module   string       `json:"module"`
	Version  string       `json:"version"`
	Revision *string      `json:"revision"`
	Modified bool         `json:"modified"`
	Go       string       `json:"go"`
	Drivers  []driverJSON `json:"drivers"`
}

// buildVersion reads the module version and VCS stamp the go command
// embedded, and whether each registered driver can run here.
func buildVersion() versionJSON {
	v := versionJSON{Module: "github.com/ipoibd/ipoibd", Version: "(devel)", Go: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Module = bi.Main.Path
		if bi.Main.Version != "" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = optString(s.Value)
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	v.Drivers = driverStatus(ib.ProbeAll())
	return v
}

// runVersion prints the version the way "go version -m" readers expect
// on the first line, then one line per driver.
func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("--version", "[--json]", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	v := buildVersion()
	if *asJSON {
		return emit(stdout, stderr, "--version", v, exitOK)
	}
	rev := "unknown revision"
	if v.Revision != nil {
		rev = *v.Revision
		if v.Modified {
			rev += " (modified)"
		}
	}
	fmt.Fprintf(stdout, "ipoibd %s (%s, %s) %s %s/%s\n", v.Version, v.Module, rev, v.Go, runtime.GOOS, runtime.GOARCH)
	var names []string
	for _, d := range v.Drivers {
		s := d.Name
		if d.Unavailable != nil {
			s += " (unavailable)"
		}
		names = append(names, s)
	}
	fmt.Fprintf(stdout, "drivers: %s\n", strings.Join(names, ", "))
	return exitOK
}
