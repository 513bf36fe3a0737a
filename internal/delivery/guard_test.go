package delivery

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGuardCheck(t *testing.T) {
	tests := []struct {
		ip      string
		allow   []string
		blocked bool
	}{
		{ip: "127.0.0.1", blocked: true},
		{ip: "10.1.2.3", blocked: true},
		{ip: "172.16.0.1", blocked: true},
		{ip: "192.168.1.1", blocked: true},
		{ip: "169.254.169.254", blocked: true},
		{ip: "100.64.0.1", blocked: true},
		{ip: "0.0.0.0", blocked: true},
		{ip: "0.1.2.3", blocked: true},
		{ip: "255.255.255.255", blocked: true},
		{ip: "::", blocked: true},
		{ip: "::1", blocked: true},
		{ip: "fe80::1", blocked: true},
		{ip: "fe80::1%eth0", blocked: true},
		{ip: "fc00::1", blocked: true},
		{ip: "fd12:3456::1", blocked: true},
		{ip: "::ffff:127.0.0.1", blocked: true},
		{ip: "::ffff:10.0.0.1", blocked: true},
		{ip: "224.0.0.1", blocked: true},
		{ip: "ff02::1", blocked: true},
		{ip: "8.8.8.8"},
		{ip: "2001:4860:4860::8888"},
		{ip: "::ffff:8.8.8.8"},
		{ip: "10.1.2.3", allow: []string{"10.0.0.0/8"}},
		{ip: "::ffff:10.1.2.3", allow: []string{"10.0.0.0/8"}},
		{ip: "10.1.2.3", allow: []string{"192.168.0.0/16"}, blocked: true},
		{ip: "127.0.0.1", allow: []string{"127.0.0.0/8", "::1/128"}},
		{ip: "::1", allow: []string{"127.0.0.0/8", "::1/128"}},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			var g Guard
			for _, p := range tt.allow {
				g.Allow = append(g.Allow, netip.MustParsePrefix(p))
			}
			ip := netip.MustParseAddr(tt.ip)
			err := g.Check(ip)
			if !tt.blocked {
				require.NoError(t, err)
				return
			}
			var be *BlockedError
			require.ErrorAs(t, err, &be)
			assert.Equal(t, ip, be.IP)
		})
	}
}

func TestGuardRefusesInvalidAddr(t *testing.T) {
	var be *BlockedError
	require.ErrorAs(t, Guard{}.Check(netip.Addr{}), &be)
}
