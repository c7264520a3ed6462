//go:build !race

package netdev

// raceEnabled is false outside -race builds: the data-path calls trust
// their caller to be on the device's loop, because checking costs a
// gettid system call per packet.
const raceEnabled = false
