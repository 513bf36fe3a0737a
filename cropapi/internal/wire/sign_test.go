package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestSign(t *testing.T) {
	// Expected values computed outside Go with:
	//   printf '%s' "$SECRET$TS" | openssl dgst -sha256 -hmac "$SECRET" | tr a-f A-F
	vectors := []struct{ secret, ts, want string }{
		{"demo-secret-", "1719233941145", "B04D6CC53ABC5610EA8FE8DD0B1ED8A9E3B1C3614340C2003201170F597C1E46"},
		{"S3cr3t!", "1700000000000", "6818AD64D7BBE6EF5FCA38D5E36EC41F35F91D27CCD2AF5626A849A316AB33C0"},
	}
	for _, v := range vectors {
		got := Sign(v.secret, v.ts)
		assert.Equal(t, v.want, got)
		assert.Len(t, got, 64)
		assert.True(t, VerifySignature(v.secret, v.ts, v.want))
		assert.False(t, VerifySignature(v.secret, v.ts+"1", v.want))
		assert.False(t, VerifySignature(v.secret+"x", v.ts, v.want))
	}

	// And again from the documented recipe, step by step.
	mac := hmac.New(sha256.New, []byte("k"))
	mac.Write([]byte("k" + "42"))
	assert.Equal(t, fmt.Sprintf("%X", mac.Sum(nil)), Sign("k", "42"))
}

func TestTimestampIsMilliseconds(t *testing.T) {
	ts := time.Date(2024, 6, 24, 13, 39, 1, 145_000_000, time.UTC)
	assert.Equal(t, "1719236341145", Timestamp(ts))
}
