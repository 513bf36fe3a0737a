package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/status"
)

// Tenants are walls, not labels: the attacks of issue 21 on the shared S3
// namespace, made through the public API of a real `cropq api`, two workers
// and MinIO, as a hostile tenant would. Each is refused at submission
// (naming the field, nothing recorded) or lands inside the attacker's own
// namespace, and the victim's objects and records are untouched.
func TestTenantsAreWallsInS3(t *testing.T) {
	s := newStack(t, stackOptions{})
	const (
		tokAcme   = "acme-token-0123456789abcdef"
		tokGlobex = "globex-token-0123456789abcdef"
		tokOps    = "operator-token-0123456789abcdef"
	)
	ctx := context.Background()
	for _, b := range []string{"globex-private", "acme-media"} {
		_, err := s.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)})
		require.NoError(t, err)
	}
	apiAddr := freeAddr(t)
	s.env = append(s.env, "CROPQ_API_TOKENS=acme:"+tokAcme+",globex:"+tokGlobex+","+tokOps, "CROPQ_API_ADDR="+apiAddr,
		"CROPQ_TENANT_BUCKETS=globex=globex-private,acme=acme-media", "CROPQ_DEDUP_SCOPE=tenant", "CROPQ_CLAIM_CHECK_BYTES=1024")
	s.start("api", "api")
	base := "http://" + apiAddr
	s.awaitHTTP(base + "/healthz")
	s.startWorker()
	s.startWorker()

	img := s.images + "/" + firstImage(t)
	crop := func(id, extra string) string {
		return `{"requestId":"` + id + `","imageUrl":"` + img + `","targetWidth":300,"targetHeight":300` + extra + `}`
	}
	submit := func(tok, body string) (int, []byte) {
		t.Helper()
		code, _, b := apiDo(t, http.MethodPost, base+"/v1/crops", tok, body)
		return code, b
	}
	refused := func(tok, id, extra, field string) {
		t.Helper()
		code, b := submit(tok, crop(id, extra))
		require.Equal(t, http.StatusBadRequest, code, "%s: %s", id, b)
		var p httpapi.Problem
		require.NoError(t, json.Unmarshal(b, &p))
		assert.Equal(t, field, p.Field, "%s: %s", id, b)
		_, err := s.rdb.Get(ctx, rediskey.Default.Status(id)).Result()
		assert.Error(t, err, "%s: nothing recorded", id)
	}
	succeeded := func(id string) status.Record {
		t.Helper()
		rec := s.awaitState(id, 90*time.Second, status.Succeeded, status.Failed)
		require.Equal(t, status.Succeeded, rec.State, "%s: %s %s", id, rec.ErrorCode, rec.ErrorMessage)
		return rec
	}
	head := func(bucket, key string) *s3.HeadObjectOutput {
		t.Helper()
		h, err := s.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		require.NoError(t, err, "s3://%s/%s", bucket, key)
		return h
	}

	// globex's request, stored in its own namespace.
	code, b := submit(tokGlobex, crop("v1", ""))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	victim := succeeded("v1")
	assert.Equal(t, "tenants/globex/crops/v1/300x300.png", victim.Stored.Key)
	etag := aws.ToString(head(s.bucket, victim.Stored.Key).ETag)

	// 1. Overwrite: acme aims its template at globex's key, spelt as the
	// default template renders it and as it is stored. Both land in acme's
	// namespace, one of them reused for free, and globex's object is as it was.
	for i, tmpl := range []string{"crops/v1/300x300.{ext}", "tenants/globex/crops/v1/300x300.{ext}"} {
		id := fmt.Sprintf("a-over-%d", i)
		code, b = submit(tokAcme, crop(id, `,"keyTemplate":"`+tmpl+`"`))
		require.Equal(t, http.StatusAccepted, code, "%s", b)
		rec := succeeded(id)
		assert.True(t, strings.HasPrefix(rec.Stored.Key, "tenants/acme/"), rec.Stored.Key)
	}
	h := head(s.bucket, victim.Stored.Key)
	assert.Equal(t, etag, aws.ToString(h.ETag), "globex's object is untouched")
	assert.Equal(t, "v1", h.Metadata["request-id"])

	// 2. Read: acme claims the key a later globex request will get; when
	// globex writes there, acme's record names acme's own object.
	code, b = submit(tokAcme, crop("a-read", `,"keyTemplate":"crops/g2/300x300.{ext}"`))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	spy := succeeded("a-read")
	code, b = submit(tokGlobex, crop("g2", ""))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	g2 := succeeded("g2")
	assert.NotEqual(t, g2.Stored.Key, spy.Stored.Key)
	assert.Equal(t, "a-read", head(s.bucket, spy.Stored.Key).Metadata["request-id"], "acme's key holds acme's crop")

	// 3. Inputs in flight: a claim-checked image of globex, and acme's
	// template aimed at where it is kept. The operators' templates are refused
	// there outright; acme's lands in acme's namespace, and globex's request
	// reads its image whole.
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "images", firstImage(t)))
	require.NoError(t, err)
	b64 := `{"requestId":"g3","imageBase64":"` + base64.StdEncoding.EncodeToString(raw) + `","targetWidth":300,"targetHeight":300}`
	code, b = submit(tokGlobex, b64)
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	code, b = submit(tokAcme, crop("a-inputs", `,"keyTemplate":"inputs/g3/{requestId}.{ext}"`))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	assert.True(t, strings.HasPrefix(succeeded("a-inputs").Stored.Key, "tenants/acme/inputs/"))
	refused(tokOps, "o-inputs", `,"keyTemplate":"inputs/g3/{requestId}.{ext}"`, "keyTemplate")
	refused(tokOps, "o-tenants", `,"keyTemplate":"tenants/globex/crops/v1/300x300.{ext}"`, "keyTemplate")
	succeeded("g3")

	// 4. Any bucket: only a tenant's own, from CROPQ_TENANT_BUCKETS.
	refused(tokAcme, "a-foreign", `,"bucket":"globex-private"`, "bucket")
	refused(tokAcme, "a-elsewhere", `,"bucket":"`+s.bucket+`-other"`, "bucket")
	refused(tokOps, "o-foreign", `,"bucket":"globex-private"`, "bucket")
	code, b = submit(tokGlobex, crop("g-own", `,"bucket":"globex-private","keyTemplate":"hero/{requestId}.{ext}"`))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	own := succeeded("g-own")
	assert.Equal(t, "globex-private", own.Stored.Bucket)
	assert.Equal(t, "hero/g-own.png", own.Stored.Key, "in its own bucket a tenant's keys are as rendered")

	// 5. Two requests of one tenant rendering the same key: the second fails
	// before paying (key_taken), and the first's object stays.
	code, b = submit(tokAcme, crop("a-k1", `,"keyTemplate":"shared/hero.{ext}","dedup":false`))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	first := succeeded("a-k1")
	firstTag := aws.ToString(head(s.bucket, first.Stored.Key).ETag)
	code, b = submit(tokAcme, strings.Replace(crop("a-k2", `,"keyTemplate":"shared/hero.{ext}","dedup":false`), `"targetWidth":300`, `"targetWidth":400`, 1))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	second := s.awaitState("a-k2", 90*time.Second, status.Succeeded, status.Failed)
	require.Equal(t, status.Failed, second.State)
	assert.Equal(t, "key_taken", second.ErrorCode)
	assert.Zero(t, second.PaidCalls, "refused before paying")
	assert.Equal(t, firstTag, aws.ToString(head(s.bucket, first.Stored.Key).ETag))

	// The operators (a single-tenant deployment) keep today's keys.
	code, b = submit(tokOps, crop("o-1", ""))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	assert.Equal(t, "crops/o-1/300x300.png", succeeded("o-1").Stored.Key)
}
