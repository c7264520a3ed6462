// Package drivertest holds the checks every ib driver is held to where
// the contract is ib's and the drivers implement it each their own way:
// one list of steps keeps them to the same behaviour instead of a copy of
// it in each driver's tests. The simulator and the udp driver run them;
// the verbs driver's tests, which need a device in a VM, keep their own.
// It is test support only; nothing outside _test.go files imports it.
package drivertest
