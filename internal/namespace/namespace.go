// Package namespace draws the walls between tenants in S3: where each
// tenant's results may be written, and the places cropq keeps for itself.
//
// A tenant other than the default one writes in the default bucket only
// under its own prefix, tenants/{tenant}/, prepended to whatever its key
// template renders, so no template can reach another tenant's objects; it may
// name only the buckets CROPQ_TENANT_BUCKETS gives it (its own: there its keys
// are as rendered). The default tenant (the operators') keeps today's keys
// and buckets, except the buckets given to a tenant and the places cropq
// keeps: the tenants/ prefix of the default bucket and the claim-checked
// inputs' prefix of their bucket, which no template may render into.
package namespace

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/tasks"
)

// TenantsPrefix is where tenants' objects live in the default bucket.
const TenantsPrefix = "tenants/"

// Place is a prefix of a bucket.
type Place struct{ Bucket, Prefix string }

// Walls say where each tenant may write. The zero value has no tenant
// buckets and keeps nothing but the tenants/ prefix.
type Walls struct {
	// DefaultBucket is CROPQ_S3_BUCKET: where a request without a bucket
	// goes, each tenant under its own prefix.
	DefaultBucket string
	// TenantBuckets are the buckets each tenant may name besides the default
	// one (CROPQ_TENANT_BUCKETS); a bucket belongs to one tenant.
	TenantBuckets map[string][]string
	// Inputs is where claim-checked images live: no template reaches it.
	Inputs Place
}

// Error is a destination the tenant may not use; Field is bucket or
// keyTemplate.
type Error struct{ Field, Reason string }

func (e *Error) Error() string { return e.Field + ": " + e.Reason }

// Validate checks the configuration: a bucket belongs to one tenant, and
// neither the default bucket nor the inputs' is a tenant's.
func (w Walls) Validate() error {
	owner := map[string]string{}
	for _, t := range sortedTenants(w.TenantBuckets) {
		if t == tasks.DefaultTenant {
			return fmt.Errorf("tenant %s (the operators') names no buckets: it may use any but the tenants'", t)
		}
		if err := tasks.ValidateTenant(t); err != nil {
			return fmt.Errorf("tenant %q: %w", t, err)
		}
		for _, b := range w.TenantBuckets[t] {
			switch {
			case b == "":
				return fmt.Errorf("tenant %s: an empty bucket name", t)
			case b == w.DefaultBucket:
				return fmt.Errorf("tenant %s: bucket %s is the default bucket, shared by every tenant under its own prefix", t, b)
			case b == w.Inputs.Bucket && w.Inputs.Bucket != "":
				return fmt.Errorf("tenant %s: bucket %s holds the claim-checked images", t, b)
			case owner[b] != "":
				return fmt.Errorf("bucket %s is given to both %s and %s: a bucket belongs to one tenant", b, owner[b], t)
			}
			owner[b] = t
		}
	}
	return nil
}

// Place returns where tenant's result goes: bucket ("" for the default) and
// key (as rendered from the request's template) in the tenant's namespace.
// A destination the tenant may not use is an *Error.
func (w Walls) Place(tenant, bucket, key string) (string, string, error) {
	if tenant == "" {
		tenant = tasks.DefaultTenant
	}
	if bucket == "" {
		bucket = w.DefaultBucket
	}
	if tenant != tasks.DefaultTenant {
		switch {
		case bucket == w.DefaultBucket:
			key = TenantsPrefix + tenant + "/" + key
		case !slices.Contains(w.TenantBuckets[tenant], bucket):
			return "", "", &Error{Field: "bucket", Reason: w.allowed(tenant, bucket)}
		}
	} else if owner := w.owner(bucket); owner != "" {
		return "", "", &Error{Field: "bucket", Reason: fmt.Sprintf("bucket %s belongs to tenant %s (CROPQ_TENANT_BUCKETS)", bucket, owner)}
	} else if bucket == w.DefaultBucket && strings.HasPrefix(key, TenantsPrefix) {
		return "", "", &Error{Field: "keyTemplate", Reason: fmt.Sprintf("renders %.80q, under %s, where tenants' results live", key, TenantsPrefix)}
	}
	if w.Inputs.Prefix != "" && bucket == w.Inputs.Bucket && strings.HasPrefix(key, w.Inputs.Prefix) {
		return "", "", &Error{Field: "keyTemplate", Reason: fmt.Sprintf("renders %.80q, under %s, where cropq keeps claim-checked images", key, w.Inputs.Prefix)}
	}
	return bucket, key, nil
}

// Check is Place for the entrances (tasks.Destinations): key "" stands for
// the worker's own template, of which only the bucket is checked here. Its
// error is a *cropapi.ValidationError naming the field.
func (w Walls) Check(tenant, bucket, key string) error {
	if key == "" {
		key = "x" // the worker's template is checked at its start-up
	}
	if _, _, err := w.Place(tenant, bucket, key); err != nil {
		e := err.(*Error)
		return &cropapi.ValidationError{Field: e.Field, Reason: e.Reason}
	}
	return nil
}

func (w Walls) allowed(tenant, bucket string) string {
	may := append([]string{w.DefaultBucket}, w.TenantBuckets[tenant]...)
	return fmt.Sprintf("tenant %s may not write to bucket %s: its buckets are %s (CROPQ_TENANT_BUCKETS; the default one under tenants/%s/)",
		tenant, bucket, strings.Join(may, ", "), tenant)
}

func (w Walls) owner(bucket string) string {
	for _, t := range sortedTenants(w.TenantBuckets) {
		if slices.Contains(w.TenantBuckets[t], bucket) {
			return t
		}
	}
	return ""
}

func sortedTenants(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for t := range m {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// CheckPlace reports whether tenant may name key of bucket as a manifest
// to read or a prefix to write a report under: a tenant other than the
// default one only in its own buckets or under tenants/{tenant}/ of the
// default bucket, the default tenant anywhere but in a tenant's bucket.
// Its error is a *cropapi.ValidationError naming field.
func (w Walls) CheckPlace(tenant, bucket, key, field string) error {
	if tenant == "" {
		tenant = tasks.DefaultTenant
	}
	own := TenantsPrefix + tenant + "/"
	switch {
	case tenant == tasks.DefaultTenant:
		if owner := w.owner(bucket); owner != "" {
			return &cropapi.ValidationError{Field: field, Reason: fmt.Sprintf("bucket %s belongs to tenant %s (CROPQ_TENANT_BUCKETS)", bucket, owner)}
		}
	case slices.Contains(w.TenantBuckets[tenant], bucket):
	case bucket == w.DefaultBucket && strings.HasPrefix(key, own) && !strings.Contains(key, "/../"):
	default:
		return &cropapi.ValidationError{Field: field, Reason: fmt.Sprintf("tenant %s may name only its own buckets (%s) or s3://%s/%s…",
			tenant, strings.Join(w.TenantBuckets[tenant], ", "), w.DefaultBucket, own)}
	}
	return nil
}
