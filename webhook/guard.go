package webhook

import (
	"fmt"
	"net/netip"
)

// blockedPrefixes are ranges not covered by netip.Addr's classification
// methods that still reach internal or meaningless destinations.
var blockedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network"; 0.0.0.0 reaches localhost on Linux
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT, often internal in clouds
	netip.MustParsePrefix("240.0.0.0/4"),   // reserved, and the broadcast address
}

// Guard refuses addresses a webhook must not reach, so a callback URL cannot
// be used to probe the worker's own network (SSRF): loopback, private
// (RFC 1918, fc00::/7), link-local, unspecified, multicast, CGNAT
// 100.64.0.0/10, 0.0.0.0/8 and 240.0.0.0/4, including their IPv4-mapped IPv6
// forms. An address inside one of Allow is accepted regardless, for tests
// and for receivers deliberately run on an internal network.
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
	if blocked(a) {
		return &BlockedError{IP: ip}
	}
	return nil
}

func blocked(a netip.Addr) bool {
	if a.IsLoopback() || a.IsPrivate() || a.IsUnspecified() || a.IsMulticast() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range blockedPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
