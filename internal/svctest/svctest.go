// Package svctest runs a service for the length of a test: the step every
// test that builds a server (DHCP in the simulator's integration tests and
// in stack/dhcp's own) takes the same way. It imports no package of the
// module, so the package whose service it runs can use it in its own tests.
// It is test support only; nothing outside _test.go files imports it.
package svctest

import "testing"

// Service is what Start runs: started once, stopped once.
type Service interface {
	Start() error
	Stop()
}

// Start fails tb if err (the error of building s) is not nil, starts s,
// failing tb if that fails, and stops s when the test ends. It returns s,
// so a helper can end with
//
//	srv, err := dhcp.NewServer(cfg)
//	return svctest.Start(t, srv, err)
func Start[S Service](tb testing.TB, s S, err error) S {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}
