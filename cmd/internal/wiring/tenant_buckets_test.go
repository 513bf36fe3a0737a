package wiring

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/tasks"
)

func TestTenantBucketsConfig(t *testing.T) {
	load := func(extra map[string]string) (Config, error) {
		env := map[string]string{"CROPQ_REDIS_URL": "redis://127.0.0.1:1/0"}
		for k, v := range extra {
			env[k] = v
		}
		return LoadConfig(MapEnv(env))
	}
	c, err := load(nil)
	require.NoError(t, err)
	assert.Nil(t, c.Storage.Walls.TenantBuckets, "unset: tenants use the default bucket, under their own prefix")
	assert.Equal(t, "cropq", c.Storage.Walls.DefaultBucket)
	assert.Equal(t, "inputs/", c.Storage.Walls.Inputs.Prefix)
	assert.NotNil(t, c.Task.Destinations, "the entrances check the walls")

	c, err = load(map[string]string{"CROPQ_TENANT_BUCKETS": " acme = acme-crops|acme-media , globex=globex-crops"})
	require.NoError(t, err)
	assert.Equal(t, map[string][]string{"acme": {"acme-crops", "acme-media"}, "globex": {"globex-crops"}}, c.Storage.Walls.TenantBuckets)
	// The entrances refuse a foreign bucket, naming the field.
	req := tasks.Request{RequestID: "r1", ImageURL: "https://cdn.example.com/a.jpg", Params: tasks.Params{TargetWidth: 800, TargetHeight: 800, Tenant: "acme", Bucket: "globex-crops"}}
	err = req.Validate(c.Task.Rules())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bucket")
	req.Bucket = "acme-media"
	require.NoError(t, req.Validate(c.Task.Rules()))

	for value, want := range map[string]string{
		"acme":                      "tenant=bucket|bucket",
		"acme=":                     "valid S3 bucket names",
		"acme=Bad_Bucket":           "valid S3 bucket names",
		"acme=a||b":                 "valid S3 bucket names",
		"ACME=acme-crops":           "a-z 0-9",
		"acme=x1a,acme=x1b":         "each tenant once",
		"acme=shared,globex=shared": "belongs to one tenant",
		"acme=cropq":                "default bucket",
		"default=ops-bucket":        "operators",
	} {
		_, err := load(map[string]string{"CROPQ_TENANT_BUCKETS": value})
		if assert.Error(t, err, value) {
			assert.Contains(t, err.Error(), "CROPQ_TENANT_BUCKETS", value)
			assert.Contains(t, err.Error(), want, value)
		}
	}
	_, err = load(map[string]string{"CROPQ_KEY_TEMPLATE": "inputs/{requestId}.{ext}"})
	if assert.Error(t, err, "the worker's own template may not reach the claim-checked images") {
		assert.Contains(t, err.Error(), "CROPQ_KEY_TEMPLATE")
	}
}
