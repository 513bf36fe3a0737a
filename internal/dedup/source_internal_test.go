package dedup

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSameValidators(t *testing.T) {
	const lm1, lm2 = "Sun, 06 Dec 2026 05:00:00 GMT", "Sun, 06 Dec 2026 05:00:01 GMT"
	for _, c := range []struct {
		name     string
		old, cur Validators
		same, ok bool
	}{
		{"same ETag", Validators{ETag: `"a"`}, Validators{ETag: `"a"`, LastModified: lm2}, true, true},
		{"another ETag", Validators{ETag: `"a"`, LastModified: lm1}, Validators{ETag: `"b"`, LastModified: lm1}, false, true},
		{"a weak ETag is not its strong twin", Validators{ETag: `W/"a"`}, Validators{ETag: `"a"`}, false, true},
		{"same date and length", Validators{LastModified: lm1, Length: 10}, Validators{LastModified: lm1, Length: 10}, true, true},
		{"same date, another length", Validators{LastModified: lm1, Length: 10}, Validators{LastModified: lm1, Length: 11}, false, true},
		{"same date, a length unknown", Validators{LastModified: lm1, Length: 10}, Validators{LastModified: lm1}, true, true},
		{"another date", Validators{LastModified: lm1}, Validators{LastModified: lm2}, false, true},
		{"an ETag appeared", Validators{LastModified: lm1}, Validators{ETag: `"a"`, LastModified: lm1}, false, true},
		{"no validator now: the digest decides", Validators{ETag: `"a"`}, Validators{Length: 10}, false, false},
		{"none recorded: the digest decides", Validators{Digest: "ab"}, Validators{}, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			same, ok := sameValidators(c.old, c.cur)
			assert.Equal(t, c.same, same)
			assert.Equal(t, c.ok, ok)
		})
	}
}

func TestEntryEncodesTheSourceAndReadsOlderEntries(t *testing.T) {
	r := Result{RequestID: "r1", Bucket: "b", Key: "k", ETag: "e", ContentType: "image/png", Size: 3, Width: 1, Height: 2,
		APIRequestID: "api", Tenant: "acme", Source: Validators{ETag: `"x"`, LastModified: "Sun, 06 Dec 2026 05:00:00 GMT", Length: 42, Digest: "ab"}}
	got, err := decode(r.encode())
	assert.NoError(t, err)
	assert.Equal(t, r.Source, got.Source)
	assert.NotEqual(t, Version("k", "r1"), Version("k", "r2"))

	// An ETag holding the separator is not recorded rather than misread.
	r.Source.ETag = "a" + sep + "b"
	got, err = decode(r.encode())
	assert.NoError(t, err)
	assert.Empty(t, got.Source.ETag)

	// Written before validators were (11 fields): nothing known.
	old := "r1" + sep + "b" + sep + "k" + sep + "e" + sep + "image/png" + sep + "3" + sep + "1" + sep + "2" + sep + "api" + sep + "0" + sep + "acme"
	got, err = decode(old)
	assert.NoError(t, err)
	assert.False(t, got.Source.Known())
}
