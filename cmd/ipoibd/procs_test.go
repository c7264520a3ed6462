package main

import (
	"os"
	"runtime"
	"testing"
)

func TestDaemonProcs(t *testing.T) {
	tests := []struct {
		name string
		env  string
		cur  int
		want int
	}{
		{"one CPU is raised", "", 1, 2},
		{"two CPUs kept", "", 2, 2},
		{"many CPUs kept", "", 16, 16},
		{"user's choice of one kept", "1", 1, 1},
		{"user's choice of four kept", "4", 4, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := daemonProcs(tt.env, tt.cur); got != tt.want {
				t.Errorf("daemonProcs(%q, %d) = %d, want %d", tt.env, tt.cur, got, tt.want)
			}
		})
	}
}

// TestRaiseProcs runs raiseProcs at GOMAXPROCS 1 with the variable unset
// and checks the process ends up with minDaemonProcs.
func TestRaiseProcs(t *testing.T) {
	if v, ok := os.LookupEnv("GOMAXPROCS"); ok {
		t.Setenv("GOMAXPROCS", v)
		os.Unsetenv("GOMAXPROCS")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	raiseProcs()
	if got := runtime.GOMAXPROCS(0); got != minDaemonProcs {
		t.Errorf("GOMAXPROCS after raiseProcs = %d, want %d", got, minDaemonProcs)
	}
}
