//go:build race

package ipoib

// raceEnabled turns on the home-loop check of the data-path calls (Push,
// Pull, Enter, Claim, Resolve, ...), which costs a gettid system call per
// call: worth it in race-detector runs, not in production.
const raceEnabled = true
