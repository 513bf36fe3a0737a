// Package netguard decides where cropq may let a URL point: image URLs sent
// to the crop API and webhook callback URLs must not reach the machines
// around cropq itself (SSRF).
//
// A host check is only as good as its agreement with the client that will
// fetch the URL. Resolvers and URL parsers accept many spellings of one
// address (0x7f.1, 2130706433, 0177.0.0.1, [::ffff:7f00:1], fullwidth
// digits, ⓛⓞⓒⓐⓛⓗⓞⓢⓣ, …), so Canonical first turns a host into the one
// form such a client ends up using, and only that form is judged.
package netguard

import (
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// Host is a canonical URL host.
type Host struct {
	// Name is the canonical ASCII host: lower case, IDNA-mapped, without a
	// trailing dot; for an IP literal, the address's canonical string
	// (IPv6 without brackets, with its zone if it has one).
	Name string
	// Addr is valid when the host is an IP literal in any spelling.
	Addr netip.Addr
}

// HostError is returned for a host that cannot be canonicalised or that
// must not be contacted.
type HostError struct {
	Host   string // the host as given
	Reason string // a sentence naming the host, e.g. `host "0x7f.1" is 127.0.0.1, a loopback address`
}

func (e *HostError) Error() string { return e.Reason }

func hostError(host, format string, args ...any) *HostError {
	return &HostError{Host: host, Reason: fmt.Sprintf("host %q ", host) + fmt.Sprintf(format, args...)}
}

// Canonical canonicalises a URL host (without port) the way a client that
// fetches the URL would, following the WHATWG URL host parser and Go's
// net/http:
//
//   - an IPv6 literal may come with or without brackets (url.URL.Hostname
//     strips them); its zone may follow % or, inside brackets, %25 (RFC 6874);
//   - percent-encoding is not decoded: url.Parse has already done it, and a
//     host still holding % (other than an IPv6 zone) is refused rather than
//     guessed at;
//   - a non-ASCII host is mapped with IDNA UTS #46 (idna.Lookup, as net/http
//     does), so fullwidth digits, ideographic full stops and circled letters
//     become what they will be resolved as;
//   - the name is lower-cased and a trailing dot dropped;
//   - a name whose last label is numeric (decimal or 0x-hex) is an IPv4
//     address in the legacy inet_aton forms browsers and getaddrinfo accept
//     (1–4 parts, each decimal, 0x hex or 0-prefixed octal, the last part
//     filling the remaining bytes), and is refused if it is not a valid one
//     (1.2.3.256, 1.2.3.4.5, foo.123).
//
// Hosts that cannot be canonicalised return a *HostError.
func Canonical(host string) (Host, error) {
	if host == "" {
		return Host{}, &HostError{Host: host, Reason: "host is empty"}
	}
	if strings.HasPrefix(host, "[") {
		if len(host) < 2 || !strings.HasSuffix(host, "]") {
			return Host{}, hostError(host, "has an unclosed bracket")
		}
		return canonicalIPv6(host, host[1:len(host)-1], true)
	}
	if strings.Contains(host, ":") {
		return canonicalIPv6(host, host, false)
	}
	if strings.Contains(host, "%") {
		return Host{}, hostError(host, "contains %%: a percent-encoded host is not accepted")
	}

	name := host
	if !isASCII(name) {
		// ASCII hosts skip IDNA, as in net/http: mapping would only
		// lower-case them, and it would refuse names (with _) that resolve.
		n, err := idna.Lookup.ToASCII(name)
		if err != nil {
			return Host{}, hostError(host, "is not a valid internationalised domain name (%s)", strings.TrimPrefix(err.Error(), "idna: "))
		}
		name = n
	}
	name = strings.ToLower(name)
	name = strings.TrimSuffix(name, ".") // "localhost." is localhost
	if name == "" {
		return Host{}, hostError(host, "has no name")
	}
	if len(name) > 253 {
		return Host{}, hostError(host, "is longer than 253 characters")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" {
			return Host{}, hostError(host, "has an empty label")
		}
		if len(l) > 63 {
			return Host{}, hostError(host, "has a label longer than 63 characters")
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return Host{}, hostError(host, "contains %q, which a host name cannot", rune(c))
			}
		}
	}
	if endsInNumber(labels) {
		a, ok := parseIPv4(labels)
		if !ok {
			return Host{}, hostError(host, "looks like an IPv4 address but is not a valid one")
		}
		return Host{Name: a.String(), Addr: a}, nil
	}
	return Host{Name: name}, nil
}

func canonicalIPv6(host, s string, bracketed bool) (Host, error) {
	addr, zone, hasZone := strings.Cut(s, "%")
	if hasZone {
		if bracketed && strings.HasPrefix(zone, "25") {
			zone = zone[2:] // RFC 6874: in a URL the zone separator is written %25
		}
		if !validZone(zone) {
			return Host{}, hostError(host, "has an invalid IPv6 zone")
		}
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is6() {
		return Host{}, hostError(host, "is not a valid IPv6 address")
	}
	if hasZone {
		a = a.WithZone(zone)
	}
	return Host{Name: a.String(), Addr: a}, nil
}

// validZone accepts RFC 6874 zone IDs: unreserved characters only.
func validZone(z string) bool {
	if z == "" {
		return false
	}
	for i := 0; i < len(z); i++ {
		c := z[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0) {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// endsInNumber is the WHATWG "ends in a number" check: such a host is
// parsed as IPv4 or refused, never resolved as a name.
func endsInNumber(labels []string) bool {
	last := labels[len(labels)-1]
	if allIn(last, 10) {
		return true
	}
	return strings.HasPrefix(last, "0x") && allIn(last[2:], 16)
}

func allIn(s string, base int) bool {
	for i := 0; i < len(s); i++ {
		if digit(s[i]) >= base {
			return false
		}
	}
	return true
}

func digit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return 99
}

// parseIPv4 is the WHATWG IPv4 parser (inet_aton's forms) on lower-case,
// non-empty labels.
func parseIPv4(parts []string) (netip.Addr, bool) {
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var v uint64
	for i, p := range parts {
		n, ok := parseIPv4Number(p)
		if !ok {
			return netip.Addr{}, false
		}
		if i < len(parts)-1 {
			if n > 255 {
				return netip.Addr{}, false
			}
			v |= n << (8 * (3 - i))
			continue
		}
		// The last part fills the bytes the others left.
		if n >= 1<<(8*(5-len(parts))) {
			return netip.Addr{}, false
		}
		v |= n
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseIPv4Number parses decimal, 0x hex (digits optional: "0x" is 0) or
// 0-prefixed octal. Values above 2³² saturate; they are refused anyway.
func parseIPv4Number(s string) (uint64, bool) {
	base := 10
	switch {
	case strings.HasPrefix(s, "0x"):
		s, base = s[2:], 16
	case len(s) > 1 && s[0] == '0':
		s, base = s[1:], 8
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		d := digit(s[i])
		if d >= base {
			return 0, false
		}
		if n <= 1<<32 {
			n = n*uint64(base) + uint64(d)
		}
	}
	return n, true
}

var (
	metadata4 = netip.MustParseAddr("169.254.169.254") // AWS, GCP, Azure, …
	metadata6 = netip.MustParseAddr("fd00:ec2::254")   // AWS over IPv6
	broadcast = netip.MustParseAddr("255.255.255.255")
)

// blocked4 are IPv4 ranges netip.Addr's methods do not classify.
var blocked4 = []struct {
	p    netip.Prefix
	what string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), `a "this network" address`}, // 0.0.0.0 reaches localhost on Linux
	{netip.MustParsePrefix("100.64.0.0/10"), "a carrier-grade NAT address"},
	{netip.MustParsePrefix("192.0.0.0/24"), "a reserved (IETF protocol) address"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved address"},
}

// embedded4 are IPv6 ranges whose last 32 bits are an IPv4 address a packet
// ends up at (through the host's stack or a translator); the address is
// judged as that IPv4 address. IPv4-mapped ::ffff:0:0/96 is Unmap's job.
var embedded4 = []netip.Prefix{
	netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated)
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64 well-known prefix
	netip.MustParsePrefix("::ffff:0:0:0/96"), // SIIT IPv4-translated
}

var (
	sixToFour   = netip.MustParsePrefix("2002::/16")      // 6to4: IPv4 in bits 16–47
	localNAT64  = netip.MustParsePrefix("64:ff9b:1::/48") // local-use NAT64: translates to anything inside
	siteLocal6  = netip.MustParsePrefix("fec0::/10")      // deprecated, still routed internally
	compatHost6 = netip.MustParsePrefix("::/127")         // :: and ::1 are not IPv4-compatible
)

// Blocked reports whether a must not be contacted: loopback, private
// (RFC 1918, fc00::/7), link-local, multicast, unspecified, 0.0.0.0/8,
// 100.64.0.0/10 (CGNAT), 192.0.0.0/24, 198.18.0.0/15, 240.0.0.0/4 (with
// broadcast), site-local fec0::/10, local-use NAT64, and the cloud metadata
// addresses 169.254.169.254 and fd00:ec2::254. IPv6 forms that carry an IPv4
// address (mapped, compatible, NAT64, 6to4) are judged as that address;
// zones are ignored. The invalid Addr is blocked.
func Blocked(a netip.Addr) bool {
	_, what := classify(a)
	return what != ""
}

// classify returns the address a reaches (a itself, or the IPv4 address it
// carries) and why it is blocked, or "" if it is not.
func classify(a netip.Addr) (netip.Addr, string) {
	if !a.IsValid() {
		return a, "not an address"
	}
	a = a.WithZone("").Unmap() // a zone picks an interface, not a destination
	if a.Is4() {
		return classify4(a)
	}
	if a == metadata6 {
		return a, "a cloud metadata address"
	}
	if !compatHost6.Contains(a) {
		for _, p := range embedded4 {
			if p.Contains(a) {
				b := a.As16()
				return classify4(netip.AddrFrom4([4]byte(b[12:])))
			}
		}
	}
	switch {
	case sixToFour.Contains(a):
		b := a.As16()
		if v4, what := classify4(netip.AddrFrom4([4]byte(b[2:6]))); what != "" {
			return v4, what
		}
		return a, ""
	case localNAT64.Contains(a):
		return a, "a local-use NAT64 address"
	case siteLocal6.Contains(a):
		return a, "a site-local address"
	}
	return classifyCommon(a)
}

// classify4 gives the metadata and broadcast addresses their own reason
// before the ranges that contain them.
func classify4(a netip.Addr) (netip.Addr, string) {
	switch {
	case a.IsUnspecified():
		return a, "an unspecified address" // before 0.0.0.0/8
	case a == metadata4:
		return a, "a cloud metadata address (link-local)"
	case a == broadcast:
		return a, "the broadcast address"
	}
	for _, b := range blocked4 {
		if b.p.Contains(a) {
			return a, b.what
		}
	}
	return classifyCommon(a)
}

// classifyCommon is what netip.Addr's own methods know, for both families.
func classifyCommon(a netip.Addr) (netip.Addr, string) {
	switch {
	case a.IsUnspecified():
		return a, "an unspecified address"
	case a.IsLoopback():
		return a, "a loopback address"
	case a.IsPrivate():
		return a, "a private address"
	case a.IsLinkLocalUnicast():
		return a, "a link-local address"
	case a.IsInterfaceLocalMulticast(), a.IsLinkLocalMulticast(), a.IsMulticast():
		return a, "a multicast address"
	}
	return a, ""
}

// CheckHost canonicalises host and refuses, with a *HostError, a host that
// cannot be canonicalised, localhost and names under it (RFC 6761: they
// resolve to loopback), and IP literals, in any spelling, that Blocked
// refuses. Other names pass: what they resolve to is checked at dial time by
// the webhook guard, and the crop API resolves image URLs itself.
//
// It serves image URLs and webhook callback URLs alike: a check of
// "literals only" for callbacks would follow the same rules, so there is no
// separate function for it.
func CheckHost(host string) error {
	h, err := Canonical(host)
	if err != nil {
		return err
	}
	var (
		reached netip.Addr
		what    string
	)
	switch {
	case h.Addr.IsValid():
		if reached, what = classify(h.Addr); what == "" {
			return nil
		}
	case h.Name == "localhost":
		what = "a loopback name"
	case strings.HasSuffix(h.Name, ".localhost"):
		what = "under localhost, a loopback name"
	default:
		return nil
	}
	return hostError(host, "%s", describe(host, h, reached, what))
}

// describe phrases a refusal: what an odd spelling means, the IPv4 address
// an IPv6 form reaches, then what is wrong with it.
func describe(host string, h Host, reached netip.Addr, what string) string {
	var parts []string
	if h.Name != strings.TrimSuffix(strings.TrimPrefix(host, "["), "]") {
		parts = append(parts, "is "+h.Name)
	}
	if reached.IsValid() && reached != h.Addr.WithZone("") {
		if len(parts) == 0 {
			parts = append(parts, "reaches "+reached.String())
		} else {
			parts = append(parts, "which reaches "+reached.String())
		}
	}
	if len(parts) == 0 {
		what = "is " + what
	}
	return strings.Join(append(parts, what), ", ")
}
