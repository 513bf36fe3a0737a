package delivery

import (
	"fmt"
	"net/netip"

	"github.com/cropq/cropq/internal/netguard"
)

// Guard refuses addresses a webhook must not reach, so a callback URL cannot
// be used to probe the worker's own network (SSRF): whatever
// netguard.Blocked refuses (loopback, private, link-local, unspecified,
// multicast, CGNAT, 0.0.0.0/8, 240.0.0.0/4, cloud metadata, …, including
// IPv6 forms that carry such an IPv4 address). An address inside one of
// Allow is accepted regardless, for tests and for receivers deliberately run
// on an internal network.
type Guard struct {
	Allow []netip.Prefix
}

// BlockedError is returned when Guard refuses an address.
type BlockedError struct {
	IP netip.Addr
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("webhook: address %s is not allowed", e.IP)
}

// Check returns a *BlockedError if ip must not be contacted.
func (g Guard) Check(ip netip.Addr) error {
	if !ip.IsValid() {
		return &BlockedError{IP: ip}
	}
	// Zoned addresses never match a prefix, and ::ffff:127.0.0.1 must be
	// judged as the IPv4 address it actually reaches.
	a := ip.WithZone("").Unmap()
	for _, p := range g.Allow {
		if p.Contains(a) || p.Contains(ip.WithZone("")) {
			return nil
		}
	}
	if netguard.Blocked(a) {
		return &BlockedError{IP: ip}
	}
	return nil
}
