package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Exit codes, so scripts can tell a usage mistake from a failed operation.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	// run parses args and does the work; it returns an exit code.
	run func(args []string, stdout, stderr io.Writer) int
}

// commands is filled by each subcommand's file.
var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run dispatches to a subcommand; it is main without os.Exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		usage(stdout)
		return exitOK
	case "--version", "-version", "version":
		return runVersion(args[1:], stdout, stderr)
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ipoibd: unknown command %q\n\n", args[0])
		usage(stderr)
		return exitUsage
	}
	return c.run(args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ipoibd <command> [flags]")
	fmt.Fprintln(w, "       ipoibd --version [--json]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'ipoibd <command> --help' for a command's flags.")
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// prints its usage to stderr with a one-line synopsis.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ipoibd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: ipoibd %s %s\n\nflags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and turns the outcome into an exit code: ok is
// false when the caller should return code at once (help asked for, or a
// usage error already reported).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (code int, ok bool) {
	return parseFlagsN(fs, args, stdout, 0)
}

// parseFlagsN is parseFlags for commands that take exactly n positional
// arguments after their flags.
func parseFlagsN(fs *flag.FlagSet, args []string, stdout io.Writer, n int) (code int, ok bool) {
	// The flag package prints usage itself on any error; hold that back so
	// --help goes to stdout (it is an answer, not an error) exactly once.
	printUsage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = printUsage
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			stderr := fs.Output()
			fs.SetOutput(stdout)
			fs.Usage()
			fs.SetOutput(stderr)
			return exitOK, false
		}
		fs.Usage()
		return exitUsage, false
	}
	if fs.NArg() > n {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(n))
		return exitUsage, false
	}
	if fs.NArg() < n {
		fmt.Fprintf(fs.Output(), "%s: missing argument\n", fs.Name())
		fs.Usage()
		return exitUsage, false
	}
	return exitOK, true
}

// interspersed moves the flags in args before the positional arguments,
// so "ping 10.0.0.1 -c 3" parses like "ping -c 3 10.0.0.1", as ping(8)
// and ip(8) allow. The standard flag package stops at the first
// positional argument; rather than bring in a second flag library with
// other spelling rules for the commands' existing flags, we reorder: a
// token starting with "-" is a flag, and it takes the next token as its
// value unless it is a boolean flag or already holds "=value". "--" ends
// the flags.
func interspersed(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue // the parser reports it
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	if len(pos) == 0 {
		return flags
	}
	return append(append(flags, "--"), pos...)
}
