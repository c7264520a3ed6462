//go:build !race

package ipoib

// raceEnabled is false outside -race builds: the data-path calls trust
// their caller to be on the cache's loop, because checking costs a gettid
// system call per call.
const raceEnabled = false
