package namespace_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/namespace"
)

func walls() namespace.Walls {
	return namespace.Walls{DefaultBucket: "cropq",
		TenantBuckets: map[string][]string{"acme": {"acme-crops", "acme-media"}, "globex": {"globex-private"}},
		Inputs:        namespace.Place{Bucket: "cropq", Prefix: "inputs/"}}
}

func TestPlace(t *testing.T) {
	tests := []struct {
		name, tenant, bucket, key string
		wantBucket, wantKey       string
		field                     string // the refused field, "" when placed
	}{
		{"default tenant keeps its keys", "", "", "crops/v1/100x100.png", "cropq", "crops/v1/100x100.png", ""},
		{"default tenant by name", "default", "", "crops/v1/100x100.png", "cropq", "crops/v1/100x100.png", ""},
		{"default tenant names any other bucket", "", "media", "a.png", "media", "a.png", ""},
		{"a tenant writes under its prefix", "acme", "", "crops/v1/100x100.png", "cropq", "tenants/acme/crops/v1/100x100.png", ""},
		{"a tenant naming the default bucket", "acme", "cropq", "x.png", "cropq", "tenants/acme/x.png", ""},
		{"a tenant's own bucket keeps the key", "acme", "acme-media", "x.png", "acme-media", "x.png", ""},
		{"another tenant's key is out of reach", "acme", "", "tenants/globex/crops/v1/100x100.png", "cropq", "tenants/acme/tenants/globex/crops/v1/100x100.png", ""},
		{"inputs are out of a tenant's reach", "acme", "", "inputs/g1/abc", "cropq", "tenants/acme/inputs/g1/abc", ""},
		{"another tenant's bucket", "acme", "globex-private", "x.png", "", "", "bucket"},
		{"an unlisted bucket", "acme", "elsewhere", "x.png", "", "", "bucket"},
		{"a tenant without buckets", "initech", "acme-crops", "x.png", "", "", "bucket"},
		{"the operators into a tenant's bucket", "", "acme-crops", "x.png", "", "", "bucket"},
		{"the operators into tenants/", "", "", "tenants/acme/x.png", "", "", "keyTemplate"},
		{"the operators into inputs/", "", "", "inputs/g1/abc", "", "", "keyTemplate"},
		{"tenants/ of another bucket is not reserved", "", "media", "tenants/x.png", "media", "tenants/x.png", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, k, err := walls().Place(tc.tenant, tc.bucket, tc.key)
			if tc.field != "" {
				var e *namespace.Error
				require.True(t, errors.As(err, &e), "%v", err)
				assert.Equal(t, tc.field, e.Field)
				cerr := walls().Check(tc.tenant, tc.bucket, tc.key)
				var ve *cropapi.ValidationError
				require.True(t, errors.As(cerr, &ve), "%v", cerr)
				assert.Equal(t, tc.field, ve.Field)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantBucket, b)
			assert.Equal(t, tc.wantKey, k)
			assert.NoError(t, walls().Check(tc.tenant, tc.bucket, tc.key))
		})
	}
}

func TestValidate(t *testing.T) {
	require.NoError(t, walls().Validate())
	require.NoError(t, namespace.Walls{DefaultBucket: "cropq"}.Validate())
	for name, buckets := range map[string]map[string][]string{
		"a bucket given twice":      {"acme": {"shared"}, "globex": {"shared"}},
		"the default bucket":        {"acme": {"cropq"}},
		"the inputs bucket":         {"acme": {"inputs-bucket"}},
		"buckets for the operators": {"default": {"ops"}},
		"an invalid tenant name":    {"Acme": {"acme-crops"}},
		"an empty bucket for acme":  {"acme": {""}},
	} {
		w := namespace.Walls{DefaultBucket: "cropq", TenantBuckets: buckets, Inputs: namespace.Place{Bucket: "inputs-bucket", Prefix: "inputs/"}}
		assert.Error(t, w.Validate(), name)
	}
}

// Where a tenant may name a manifest to read or a report destination.
func TestCheckPlace(t *testing.T) {
	for _, tc := range []struct {
		name, tenant, bucket, key string
		ok                        bool
	}{
		{"a tenant's own bucket", "acme", "acme-media", "catalogues/june.jsonl", true},
		{"its prefix of the default bucket", "acme", "cropq", "tenants/acme/june.jsonl", true},
		{"the default bucket outside its prefix", "acme", "cropq", "catalogues/june.jsonl", false},
		{"another tenant's prefix", "acme", "cropq", "tenants/globex/june.jsonl", false},
		{"a way out of its prefix", "acme", "cropq", "tenants/acme/../globex/june.jsonl", false},
		{"another tenant's bucket", "acme", "globex-private", "june.jsonl", false},
		{"a bucket of no one", "acme", "media", "june.jsonl", false},
		{"the default tenant, anywhere", "", "media", "june.jsonl", true},
		{"the default tenant, not a tenant's bucket", "default", "acme-crops", "june.jsonl", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := walls().CheckPlace(tc.tenant, tc.bucket, tc.key, "manifest")
			if tc.ok {
				assert.NoError(t, err)
				return
			}
			var ve *cropapi.ValidationError
			require.True(t, errors.As(err, &ve), "%v", err)
			assert.Equal(t, "manifest", ve.Field)
		})
	}
}
