//go:build race

package ipoib

// raceEnabled turns on the home-loop check of the data-path calls (Push,
// Pull, Enter, Claim, Resolve, ...): kept to race-detector runs, which
// hunt such misuse.
const raceEnabled = true
