package netguard

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCanonical(t *testing.T) {
	tests := []struct {
		host string
		name string // canonical Name; "" = refused
		addr string // canonical Addr; "" = a name
	}{
		// Legacy IPv4 spellings.
		{"127.0.0.1", "127.0.0.1", "127.0.0.1"},
		{"0x7f.0.0.1", "127.0.0.1", "127.0.0.1"},
		{"0x7F.1", "127.0.0.1", "127.0.0.1"},
		{"0X7f.1", "127.0.0.1", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1", "127.0.0.1"},
		{"017700000001", "127.0.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1", "127.0.0.1"},
		{"127.1", "127.0.0.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1", "127.0.0.1"},
		{"10.1", "10.0.0.1", "10.0.0.1"},
		{"0", "0.0.0.0", "0.0.0.0"},
		{"0x", "0.0.0.0", "0.0.0.0"},
		{"00", "0.0.0.0", "0.0.0.0"},
		{"2852039166", "169.254.169.254", "169.254.169.254"},
		{"0xa9fea9fe", "169.254.169.254", "169.254.169.254"},
		{"0xa9.0376.0xa9fe", "169.254.169.254", "169.254.169.254"},
		{"4294967295", "255.255.255.255", "255.255.255.255"},
		{"127.0.0.1.", "127.0.0.1", "127.0.0.1"},
		{"8.8.8.8", "8.8.8.8", "8.8.8.8"},
		{"93.184.216.34", "93.184.216.34", "93.184.216.34"},
		// Numeric last label that is not a valid IPv4 address.
		{"1.2.3.256", "", ""},
		{"1.2.3.4.5", "", ""},
		{"4294967296", "", ""},
		{"1.2.65536", "", ""},
		{"1.16777216", "", ""},
		{"256.1", "", ""},
		{"99999999999999999999999", "", ""},
		{"08", "", ""},       // octal with an 8
		{"0x1g", "0x1g", ""}, // not a number, so a name (as in WHATWG)
		{"foo.123", "", ""},
		{"example.0x", "", ""},
		{"1.2.3.4..", "", ""},
		// IPv6, bracketed or as url.URL.Hostname gives it.
		{"[::1]", "::1", "::1"},
		{"::1", "::1", "::1"},
		{"[::ffff:127.0.0.1]", "::ffff:127.0.0.1", "::ffff:127.0.0.1"},
		{"[::ffff:7f00:1]", "::ffff:127.0.0.1", "::ffff:127.0.0.1"},
		{"[0:0:0:0:0:ffff:7f00:1]", "::ffff:127.0.0.1", "::ffff:127.0.0.1"},
		{"[::FFFF:7F00:1]", "::ffff:127.0.0.1", "::ffff:127.0.0.1"},
		{"[fe80::1%25eth0]", "fe80::1%eth0", "fe80::1%eth0"},
		{"[fe80::1%eth0]", "fe80::1%eth0", "fe80::1%eth0"},
		{"fe80::1%eth0", "fe80::1%eth0", "fe80::1%eth0"},
		{"[2606:4700::1111]", "2606:4700::1111", "2606:4700::1111"},
		{"[127.0.0.1]", "", ""},
		{"[::1", "", ""},
		{"[", "", ""},
		{"[]", "", ""},
		{"[fe80::1%]", "", ""},
		{"[fe80::1%25]", "", ""},
		{"[fe80::1%25e/th0]", "", ""},
		{"[::ffff:0x7f.1]", "", ""},
		{"[v1.fe]", "", ""},
		{"::1:", "", ""},
		{"example.com:80", "", ""},
		// Names, ASCII and IDNA.
		{"cdn.example.com", "cdn.example.com", ""},
		{"CDN.Example.COM.", "cdn.example.com", ""},
		{"my_bucket.s3.example.com", "my_bucket.s3.example.com", ""},
		{"bücher.example", "xn--bcher-kva.example", ""},
		{"BÜCHER.example", "xn--bcher-kva.example", ""},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", ""},
		{"123abc.example", "123abc.example", ""},
		{"example.123abc", "example.123abc", ""},
		{"example.0x1g", "example.0x1g", ""},
		{"localhost", "localhost", ""},
		{"LOCALHOST", "localhost", ""},
		{"localhost.", "localhost", ""},
		{"foo.localhost", "foo.localhost", ""},
		{"ⓛⓞⓒⓐⓛⓗⓞⓢⓣ", "localhost", ""},
		{"ＬＯＣＡＬＨＯＳＴ", "localhost", ""},
		{"localhost。", "localhost", ""},
		{"foo。localhost", "foo.localhost", ""},
		{"１２７．０．０．１", "127.0.0.1", "127.0.0.1"},
		{"１２７。０。０。１", "127.0.0.1", "127.0.0.1"},
		{"127。1", "127.0.0.1", "127.0.0.1"},
		{"０ｘ７ｆ．１", "127.0.0.1", "127.0.0.1"},
		{"①②⑦.0.0.1", "127.0.0.1", "127.0.0.1"},
		{"１２７．０．０．２５６", "", ""},
		// Refused outright.
		{"", "", ""},
		{".", "", ""},
		{"..", "", ""},
		{"a..b", "", ""},
		{".example.com", "", ""},
		{"%6c%6fcalhost", "", ""},
		{"local%00host", "", ""},
		{"exa mple.com", "", ""},
		{"exa/mple.com", "", ""},
		{"user@example.com", "", ""},
		{"a\x00b", "", ""},
		{"bü\x00cher.example", "", ""},
		{"ex\u200dample.com", "", ""}, // ZWJ out of context
		{"ａ：８０", "", ""},              // fullwidth colon
		{strings.Repeat("a", 64) + ".example", "", ""},
		{strings.Repeat("a.", 127) + "example", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			h, err := Canonical(tt.host)
			if tt.name == "" {
				var he *HostError
				require.ErrorAs(t, err, &he, "got %+v", h)
				assert.Equal(t, tt.host, he.Host)
				assert.NotContains(t, he.Error(), "netguard.")
				assert.NotContains(t, he.Error(), "idna:")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.name, h.Name)
			if tt.addr == "" {
				assert.False(t, h.Addr.IsValid(), "addr %v", h.Addr)
			} else {
				assert.Equal(t, netip.MustParseAddr(tt.addr), h.Addr)
			}
		})
	}
}

func TestCanonicalErrorsReadable(t *testing.T) {
	for host, want := range map[string]string{
		"":              "host is empty",
		"1.2.3.256":     `host "1.2.3.256" looks like an IPv4 address but is not a valid one`,
		"%6c%6fcalhost": `host "%6c%6fcalhost" contains %: a percent-encoded host is not accepted`,
		"a b":           `host "a b" contains ' ', which a host name cannot`,
		"[127.0.0.1]":   `host "[127.0.0.1]" is not a valid IPv6 address`,
		"a..b":          `host "a..b" has an empty label`,
	} {
		_, err := Canonical(host)
		require.Error(t, err)
		assert.Equal(t, want, err.Error())
	}
	_, err := Canonical("bü\x00cher.example")
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), `host "bü\x00cher.example" is not a valid internationalised domain name (`), err.Error())
}

func TestBlocked(t *testing.T) {
	tests := []struct {
		addr    string
		blocked bool
	}{
		{"127.0.0.1", true},
		{"127.255.255.254", true},
		{"10.1.2.3", true},
		{"172.16.0.1", true},
		{"172.31.255.255", true},
		{"192.168.1.1", true},
		{"169.254.169.254", true},
		{"169.254.1.1", true},
		{"100.64.0.1", true},
		{"100.127.255.255", true},
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"240.0.0.1", true},
		{"255.255.255.255", true},
		{"192.0.0.1", true},
		{"198.18.0.1", true},
		{"198.19.255.255", true},
		{"224.0.0.1", true},
		{"239.255.255.250", true},
		{"::", true},
		{"::1", true},
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"fec0::1", true},
		{"fc00::1", true},
		{"fd12:3456::1", true},
		{"fd00:ec2::254", true},
		{"ff01::1", true},
		{"ff02::1", true},
		{"ff05::2", true},
		{"::ffff:127.0.0.1", true},
		{"::ffff:10.0.0.1", true},
		{"::ffff:169.254.169.254", true},
		{"::ffff:0.0.0.0", true},
		{"::127.0.0.1", true},
		{"::10.0.0.1", true},
		{"::0.0.0.2", true},
		{"64:ff9b::127.0.0.1", true},
		{"64:ff9b::a9fe:a9fe", true},
		{"64:ff9b:1::1", true},
		{"::ffff:0:127.0.0.1", true},
		{"2002:7f00:1::", true},
		{"2002:a00:1::1", true},
		// Reachable public addresses.
		{"8.8.8.8", false},
		{"93.184.216.34", false},
		{"1.1.1.1", false},
		{"100.63.255.255", false},
		{"100.128.0.0", false},
		{"172.32.0.1", false},
		{"198.20.0.1", false},
		{"192.0.1.1", false},
		{"223.255.255.255", false},
		{"2606:4700::1111", false},
		{"2001:4860:4860::8888", false},
		{"::ffff:8.8.8.8", false},
		{"::8.8.8.8", false},
		{"64:ff9b::8.8.8.8", false},
		{"2002:808:808::", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			assert.Equal(t, tt.blocked, Blocked(netip.MustParseAddr(tt.addr)))
		})
	}
	assert.True(t, Blocked(netip.Addr{}), "the invalid address")
}

func TestCheckHost(t *testing.T) {
	tests := []struct {
		host   string
		reason string // "" = allowed; else the whole reason
	}{
		{"127.0.0.1", `host "127.0.0.1" is a loopback address`},
		{"0x7f.1", `host "0x7f.1" is 127.0.0.1, a loopback address`},
		{"0x7F.1", `host "0x7F.1" is 127.0.0.1, a loopback address`},
		{"0x7f.0.0.1", `host "0x7f.0.0.1" is 127.0.0.1, a loopback address`},
		{"0x7f000001", `host "0x7f000001" is 127.0.0.1, a loopback address`},
		{"0177.0.0.1", `host "0177.0.0.1" is 127.0.0.1, a loopback address`},
		{"017700000001", `host "017700000001" is 127.0.0.1, a loopback address`},
		{"2130706433", `host "2130706433" is 127.0.0.1, a loopback address`},
		{"127.1", `host "127.1" is 127.0.0.1, a loopback address`},
		{"10.1", `host "10.1" is 10.0.0.1, a private address`},
		{"0", `host "0" is 0.0.0.0, an unspecified address`},
		{"0.0.0.0", `host "0.0.0.0" is an unspecified address`},
		{"0.1.2.3", `host "0.1.2.3" is a "this network" address`},
		{"192.168.0.1", `host "192.168.0.1" is a private address`},
		{"172.16.5.4", `host "172.16.5.4" is a private address`},
		{"100.64.1.1", `host "100.64.1.1" is a carrier-grade NAT address`},
		{"169.254.169.254", `host "169.254.169.254" is a cloud metadata address (link-local)`},
		{"2852039166", `host "2852039166" is 169.254.169.254, a cloud metadata address (link-local)`},
		{"169.254.0.1", `host "169.254.0.1" is a link-local address`},
		{"255.255.255.255", `host "255.255.255.255" is the broadcast address`},
		{"240.1.1.1", `host "240.1.1.1" is a reserved address`},
		{"224.0.0.251", `host "224.0.0.251" is a multicast address`},
		{"[::1]", `host "[::1]" is a loopback address`},
		{"::1", `host "::1" is a loopback address`},
		{"[::]", `host "[::]" is an unspecified address`},
		{"[::ffff:127.0.0.1]", `host "[::ffff:127.0.0.1]" reaches 127.0.0.1, a loopback address`},
		{"[::ffff:7f00:1]", `host "[::ffff:7f00:1]" is ::ffff:127.0.0.1, which reaches 127.0.0.1, a loopback address`},
		{"[0:0:0:0:0:ffff:7f00:1]", `host "[0:0:0:0:0:ffff:7f00:1]" is ::ffff:127.0.0.1, which reaches 127.0.0.1, a loopback address`},
		{"[64:ff9b::a9fe:a9fe]", `host "[64:ff9b::a9fe:a9fe]" reaches 169.254.169.254, a cloud metadata address (link-local)`},
		{"[fe80::1%25eth0]", `host "[fe80::1%25eth0]" is fe80::1%eth0, a link-local address`},
		{"fe80::1%eth0", `host "fe80::1%eth0" is a link-local address`},
		{"[fd00:ec2::254]", `host "[fd00:ec2::254]" is a cloud metadata address`},
		{"[fc00::1]", `host "[fc00::1]" is a private address`},
		{"[ff02::1]", `host "[ff02::1]" is a multicast address`},
		{"localhost", `host "localhost" is a loopback name`},
		{"LOCALHOST", `host "LOCALHOST" is localhost, a loopback name`},
		{"localhost.", `host "localhost." is localhost, a loopback name`},
		{"foo.localhost", `host "foo.localhost" is under localhost, a loopback name`},
		{"Foo.LocalHost.", `host "Foo.LocalHost." is foo.localhost, under localhost, a loopback name`},
		{"ⓛⓞⓒⓐⓛⓗⓞⓢⓣ", `host "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ" is localhost, a loopback name`},
		{"localhost。", `host "localhost。" is localhost, a loopback name`},
		{"１２７．０．０．１", `host "１２７．０．０．１" is 127.0.0.1, a loopback address`},
		{"１２７。０。０。１", `host "１２７。０。０。１" is 127.0.0.1, a loopback address`},
		// Not canonicalisable: refused with Canonical's reason.
		{"1.2.3.256", `host "1.2.3.256" looks like an IPv4 address but is not a valid one`},
		{"1.2.3.4.5", `host "1.2.3.4.5" looks like an IPv4 address but is not a valid one`},
		{"", `host is empty`},
		// Allowed.
		{"8.8.8.8", ""},
		{"93.184.216.34", ""},
		{"[2606:4700::1111]", ""},
		{"[::ffff:8.8.8.8]", ""},
		{"cdn.example.com", ""},
		{"bücher.example", ""},
		{"localhost.example.com", ""},
		{"notlocalhost", ""},
		{"localhostx", ""},
		{"127.0.0.1.nip.io", ""}, // a name: its resolution is checked at dial time
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			err := CheckHost(tt.host)
			if tt.reason == "" {
				require.NoError(t, err)
				return
			}
			var he *HostError
			require.True(t, errors.As(err, &he), "got %v", err)
			assert.Equal(t, tt.host, he.Host)
			assert.Equal(t, tt.reason, he.Reason)
			assert.Equal(t, tt.reason, err.Error())
		})
	}
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1", "0x7f.1", "0177.0.0.1", "2130706433", "127.1", "0", "0x",
		"[::ffff:7f00:1]", "[fe80::1%25eth0]", "fe80::1%eth0", "::1",
		"１２７．０．０．１", "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ", "localhost.", "foo.localhost",
		"bücher.example", "cdn.example.com", "1.2.3.256", "a..b", "%41",
		"xn--bcher-kva.example", "[64:ff9b::7f00:1]",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		h, err := Canonical(host)
		cerr := CheckHost(host)
		if err != nil {
			var he *HostError
			if !errors.As(err, &he) || he.Host != host {
				t.Fatalf("Canonical(%q) error %v is not a *HostError for the host", host, err)
			}
			if cerr == nil {
				t.Fatalf("CheckHost(%q) accepts a host Canonical refuses: %v", host, err)
			}
			return
		}
		again, err := Canonical(h.Name)
		if err != nil {
			t.Fatalf("Canonical(%q) = %+v, which does not re-canonicalise: %v", host, h, err)
		}
		if again != h {
			t.Fatalf("Canonical(%q) = %+v, but Canonical(%q) = %+v", host, h, h.Name, again)
		}
		if cerr == nil && h.Addr.IsValid() && Blocked(h.Addr) {
			t.Fatalf("CheckHost(%q) accepts %v, which is blocked", host, h.Addr)
		}
		if cerr == nil && (h.Name == "localhost" || strings.HasSuffix(h.Name, ".localhost")) {
			t.Fatalf("CheckHost(%q) accepts %s", host, h.Name)
		}
	})
}
