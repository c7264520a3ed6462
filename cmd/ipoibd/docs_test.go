package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docCommand is one command line shown in a ```sh block of a document.
type docCommand struct {
	file string
	line int
	text string
}

// docSkips are the commands the docs show that need what a test machine
// lacks; each is skipped by rule, and logged, never silently.
var docSkips = []struct {
	re     *regexp.Regexp
	reason string
}{
	{regexp.MustCompile(`^ipoibd up\b`), "needs an RDMA port (hardware or soft-RoCE); vmtest runs it in qemu"},
	{regexp.MustCompile(`^ipoibd (ping|peers|stats|down)\b`), "needs a daemon running on an RDMA port; TestUpPingPeersStatsDown runs these against the simulator"},
	{regexp.MustCompile(`^\./test\.sh\b`), "the test command itself"},
	{regexp.MustCompile(`^(ip |for n in a b|--dhcp-server |/tmp/ipoibd )`), "the two-namespace quick start: needs root and network namespaces; nstest's TestThreeHosts builds the same set-up and runs DHCP, ping and TCP over it"},
	{regexp.MustCompile(`^(apt-get|modprobe|rdma|ibv_devinfo|CGO_ENABLED=1 go build|go build|go test)\b`), "not an ipoibd command (set-up or build shown for context)"},
}

// docExitCodes are the documented commands that are meant to fail.
var docExitCodes = map[string]int{
	"ipoibd sim --hosts 2 --loss 0.95 --step-timeout 1s": exitFailure,
}

// extractDocCommands reads the command lines of every ```sh block.
func extractDocCommands(t *testing.T, file string) []docCommand {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []docCommand
	sc := bufio.NewScanner(f)
	inSh, n := false, 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "```") && !inSh && line == "```sh":
			inSh = true
		case strings.HasPrefix(line, "```") && inSh:
			inSh = false
		case inSh && strings.HasPrefix(line, "#"):
			// A comment line in the block: nothing to run.
		case inSh && line != "":
			if i := strings.Index(line, " # "); i >= 0 {
				line = strings.TrimSpace(line[:i])
			}
			line = strings.Replace(line, "go run ./cmd/ipoibd", "ipoibd", 1)
			line = strings.Replace(line, "./ipoibd", "ipoibd", 1)
			out = append(out, docCommand{file: file, line: n, text: line})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDocCommands runs every command README.md and docs/operations.md
// show that needs no hardware, and checks the docs' usage lines and flag
// tables against the commands' --help.
func TestDocCommands(t *testing.T) {
	root := moduleRoot(t)
	var cmds []docCommand
	for _, f := range []string{"README.md", "docs/operations.md"} {
		cmds = append(cmds, extractDocCommands(t, filepath.Join(root, f))...)
	}
	if len(cmds) < 10 {
		t.Fatalf("only %d commands found in the docs: the extractor is broken", len(cmds))
	}
	ran := 0
	for _, c := range cmds {
		where := fmt.Sprintf("%s:%d", c.file[len(root)+1:], c.line)
		skipped := false
		for _, s := range docSkips {
			if s.re.MatchString(c.text) {
				t.Logf("%s: skipped %q: %s", where, c.text, s.reason)
				skipped = true
				break
			}
		}
		if skipped {
			continue
		}
		if !strings.HasPrefix(c.text, "ipoibd") {
			t.Errorf("%s: %q is neither an ipoibd command nor covered by a skip rule", where, c.text)
			continue
		}
		if strings.ContainsAny(c.text, "|&;<>$`'\"") {
			t.Errorf("%s: %q uses the shell; give it a skip rule or simplify it", where, c.text)
			continue
		}
		args := strings.Fields(c.text)[1:]
		for i, a := range args {
			if a == "DIR" || strings.HasSuffix(a, "/DIR") {
				args[i] = t.TempDir()
			}
		}
		want := exitOK
		if code, ok := docExitCodes[c.text]; ok {
			want = code
		}
		code, stdout, stderr := runCLI(t, args...)
		ran++
		switch {
		case code == want:
		case len(args) > 0 && args[0] == "devices" && code == exitFailure && strings.TrimSpace(stderr) != "":
			// No devices on this machine: the reason is on stderr.
		default:
			t.Errorf("%s: %q: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", where, c.text, code, want, stdout, stderr)
		}
	}
	if ran < 5 {
		t.Errorf("only %d doc commands ran", ran)
	}
	checkDocUsage(t, filepath.Join(root, "docs/operations.md"))
}

// checkDocUsage compares every "usage: ipoibd ..." line of the document
// with the command's --help, and every flag of a command's flag table
// with the flags the command defines.
func checkDocUsage(t *testing.T, file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	usage := regexp.MustCompile(`(?m)^usage: ipoibd (\S+).*$`)
	for _, m := range usage.FindAllStringSubmatch(string(b), -1) {
		args := []string{m[1], "--help"}
		if m[1] == "<command>" {
			args = []string{"--help"}
		}
		_, stdout, _ := runCLI(t, args...)
		if first := strings.SplitN(stdout, "\n", 2)[0]; first != m[0] {
			t.Errorf("docs: %q\n--help: %q", m[0], first)
		}
	}
	section := regexp.MustCompile("(?m)^### `ipoibd ([a-z]+)")
	flagRow := regexp.MustCompile("(?m)^\\| `-{1,2}([A-Za-z-]+)`")
	text := string(b)
	locs := section.FindAllStringSubmatchIndex(text, -1)
	for i, loc := range locs {
		end := len(text)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		if next := strings.Index(text[loc[1]:end], "\n## "); next >= 0 {
			end = loc[1] + next
		}
		cmd := text[loc[2]:loc[3]]
		_, help, _ := runCLI(t, cmd, "--help")
		for _, f := range flagRow.FindAllStringSubmatch(text[loc[1]:end], -1) {
			if !regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(f[1]) + `\b`).MatchString(help) {
				t.Errorf("docs list flag -%s for 'ipoibd %s', which has no such flag", f[1], cmd)
			}
		}
	}
}
