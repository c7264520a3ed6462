//go:build !race

package aio

// raceEnabled is false outside -race builds: the hot home-only calls trust
// their caller there, because checking costs a gettid system call.
const raceEnabled = false
