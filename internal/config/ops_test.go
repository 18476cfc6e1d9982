package config

import (
	"strings"
	"testing"
)

// The ops listener may not take the enrollment server's socket: the collision is a problem at
// ops.listen before the start, not "address already in use" after it.
func TestOpsListenBesideVerifiedAccess(t *testing.T) {
	tests := []struct {
		ops, va string
		enabled bool
		clash   bool
	}{
		{"127.0.0.1:9090", ":8443", true, false},
		{":8443", ":8443", true, true},
		{"127.0.0.1:8443", "0.0.0.0:8443", true, true},
		{"[::]:8443", "127.0.0.1:8443", true, true},
		{"127.0.0.1:8443", "127.0.0.1:8443", true, true},
		{"127.0.0.1:8443", "127.0.0.2:8443", true, false}, // two addresses, two sockets
		{"127.0.0.1:0", "127.0.0.1:0", true, false},       // each picks a free port
		{":8443", ":8443", false, false},                  // no enrollment server
	}
	for _, tt := range tests {
		t.Run(tt.ops+" "+tt.va, func(t *testing.T) {
			c := validConfig(t)
			c.Ops.Listen = tt.ops
			c.VerifiedAccess.Enabled = tt.enabled
			c.VerifiedAccess.Listen = tt.va
			c.VerifiedAccess.TLS = ServerTLS{CertFile: "tls.crt", KeyFile: "tls.key"}
			var got *Problem
			for _, p := range c.ValidateOffline() {
				if p.Path == "ops.listen" {
					got = &p
				}
			}
			switch {
			case tt.clash && (got == nil || !strings.Contains(got.Message, "verifiedAccess.listen")):
				t.Fatalf("no problem at ops.listen naming verifiedAccess.listen: %v", got)
			case !tt.clash && got != nil:
				t.Fatalf("unexpected problem: %s", got.Message)
			}
		})
	}
}

// The profiler on an address beyond this machine is allowed (a diagnosis in a pod) but warned
// about; on loopback, or off, it is not.
func TestWarningsPprof(t *testing.T) {
	tests := []struct {
		listen string
		pprof  bool
		warn   bool
	}{
		{"127.0.0.1:9090", true, false},
		{"localhost:9090", true, false},
		{"[::1]:9090", true, false},
		{":9090", true, true},
		{"10.0.0.5:9090", true, true},
		{":9090", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			c := validConfig(t)
			c.Ops.Listen, c.Ops.Pprof = tt.listen, tt.pprof
			if ps := c.Validate(); len(ps) != 0 {
				t.Fatalf("problems: %v", ps)
			}
			var warned bool
			for _, w := range c.Warnings() {
				if w.Path == "ops.pprof" && strings.Contains(w.Message, tt.listen) {
					warned = true
				}
			}
			if warned != tt.warn {
				t.Fatalf("warned %v, want %v: %v", warned, tt.warn, c.Warnings())
			}
		})
	}
}
