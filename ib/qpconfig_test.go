package ib

import (
	"errors"
	"testing"
)

// fakeCQ stands for a driver's CQ; Validate only checks there is one.
type fakeCQ struct{ CompletionQueue }

func TestQPConfigValidate(t *testing.T) {
	lim := QPLimits{Ports: 2, PKeys: 4, MaxDepth: 64, MaxRecvBufSize: 4096, MaxRecvBytes: 64 * 1024}
	good := QPConfig{Port: 1, PKeyIndex: 3, SendCQ: fakeCQ{}, RecvCQ: fakeCQ{}, SendDepth: 64, RecvDepth: 16, RecvBufSize: 4096}
	tests := []struct {
		name string
		mod  func(*QPConfig)
		want error
	}{
		{"good", func(*QPConfig) {}, nil},
		{"port 0", func(c *QPConfig) { c.Port = 0 }, ErrNoPort},
		{"port 3 of 2", func(c *QPConfig) { c.Port = 3 }, ErrNoPort},
		{"P_Key index past the table", func(c *QPConfig) { c.PKeyIndex = 4 }, ErrBadConfig},
		{"negative P_Key index", func(c *QPConfig) { c.PKeyIndex = -1 }, ErrBadConfig},
		{"no receive CQ", func(c *QPConfig) { c.RecvCQ = nil }, ErrBadConfig},
		{"send depth 0", func(c *QPConfig) { c.SendDepth = 0 }, ErrBadConfig},
		{"receive depth past the bound", func(c *QPConfig) { c.RecvDepth = 65 }, ErrBadConfig},
		{"buffer without room for the GRH", func(c *QPConfig) { c.RecvBufSize = GRHSize - 1 }, ErrBadConfig},
		{"buffer past the bound", func(c *QPConfig) { c.RecvBufSize = 4097 }, ErrBadConfig},
		{"receive memory past the bound", func(c *QPConfig) { c.RecvDepth = 17 }, ErrBadConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			err := c.Validate(lim)
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
}
