package results_test

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/png"
	"math/rand/v2"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/namespace"
	"github.com/cropq/cropq/internal/results"
)

func (e env) etag(t *testing.T, key string) string {
	t.Helper()
	h, err := e.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key)})
	require.NoError(t, err)
	return aws.ToString(h.ETag)
}

// Two requests whose templates render the same key: the first writes, the
// second is refused (before paying, by CheckKey, and at the write itself,
// which is conditional), and the first's object is left as it was. The same
// request writing again (a retry) replaces its own object.
func TestNeverOverAnotherRequestsObject(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int // of the result image, a side: 2,000 px PNGs go multipart
	}{{"one put", 200}, {"multipart", 1400}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			first, second := noisyPNG(t, tc.size, 1), noisyPNG(t, tc.size, 2)
			require.Equal(t, tc.name == "multipart", len(first) > 5<<20, "result of %d bytes", len(first))
			src1, src2 := serve(t, bytesHandler("image/png", first)), serve(t, bytesHandler("image/png", second))
			ctx := context.Background()
			obj := func(id string) results.Object {
				return results.Object{RequestID: id, KeyTemplate: "shared/{width}.{ext}", Width: tc.size}
			}

			st, err := e.copier.Copy(ctx, src1, obj("v1"))
			require.NoError(t, err)
			before := e.etag(t, st.Key)

			var taken *results.KeyTakenError
			require.True(t, errors.As(e.copier.CheckKey(ctx, obj("v2")), &taken), "refused before paying")
			_, err = e.copier.Copy(ctx, src2, obj("v2"))
			require.True(t, errors.As(err, &taken), "refused at the write: %v", err)
			assert.Equal(t, st.Key, taken.Key)
			_, err = e.copier.CopyStored(ctx, st, obj("v3"))
			require.True(t, errors.As(err, &taken), "a reused result is refused too: %v", err)
			assert.Equal(t, before, e.etag(t, st.Key), "the first request's object is untouched")

			require.NoError(t, e.copier.CheckKey(ctx, obj("v1")), "its own key is free for a request")
			again, err := e.copier.Copy(ctx, src1, obj("v1"))
			require.NoError(t, err, "a retry of the same request replaces its own object")
			assert.Equal(t, st.Key, again.Key)
			assert.NotContains(t, e.keys(t), "multipart:"+st.Key, "no multipart upload is left behind")
		})
	}
}

// A write that loses the race (another request's object lands between the
// look and the write) is refused by its condition, not last-writer-wins.
func TestTheWriteIsConditional(t *testing.T) {
	e := newEnv(t)
	img := encode(t, "png", 200, 200)
	var e2 env
	raced := false
	// The result host, serving v2's result, first writes v1's object at the
	// same key, as a concurrent worker would between claim and write.
	src := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if !raced {
			raced = true
			_, err := e2.s3.PutObject(r.Context(), &s3.PutObjectInput{Bucket: aws.String(e.bucket), Key: aws.String("shared/200.png"),
				Body: bytes.NewReader(img), Metadata: map[string]string{"request-id": "v1"}})
			require.NoError(t, err)
		}
		bytesHandler("image/png", img)(w, r)
	})
	e2 = e
	_, err := e.copier.Copy(context.Background(), src, results.Object{RequestID: "v2", KeyTemplate: "shared/{width}.{ext}", Width: 200})
	var taken *results.KeyTakenError
	require.True(t, errors.As(err, &taken), "%v", err)
	h, err := e.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(e.bucket), Key: aws.String("shared/200.png")})
	require.NoError(t, err)
	assert.Equal(t, "v1", h.Metadata["request-id"], "the first writer's object stays")
}

// A tenant's result lands under its prefix whatever its template renders;
// a bucket outside its walls is refused before anything is written.
func TestTenantsWriteInsideTheirWalls(t *testing.T) {
	e := newEnv(t, func(c *results.Config) {
		c.Walls = namespace.Walls{TenantBuckets: map[string][]string{"globex": {"globex-private"}}}
	})
	img := serve(t, bytesHandler("image/png", encode(t, "png", 200, 200)))
	ctx := context.Background()
	st, err := e.copier.Copy(ctx, img, results.Object{RequestID: "g1", Tenant: "globex", Width: 200})
	require.NoError(t, err)
	assert.Equal(t, "tenants/globex/crops/g1/200x0.png", st.Key)

	// acme aims its template at globex's key: it lands in acme's namespace.
	st2, err := e.copier.Copy(ctx, img, results.Object{RequestID: "a1", Tenant: "acme", Width: 200, KeyTemplate: "tenants/globex/crops/g1/200x0.{ext}"})
	require.NoError(t, err)
	assert.Equal(t, "tenants/acme/tenants/globex/crops/g1/200x0.png", st2.Key)
	assert.Equal(t, "g1", headMeta(t, e, st.Key), "globex's object is globex's")

	var wall *namespace.Error
	_, err = e.copier.Copy(ctx, img, results.Object{RequestID: "a2", Tenant: "acme", Width: 200, Bucket: "globex-private"})
	require.True(t, errors.As(err, &wall), "%v", err)
	assert.Equal(t, "bucket", wall.Field)
	require.True(t, errors.As(e.copier.CheckKey(ctx, results.Object{RequestID: "a2", Tenant: "acme", Bucket: "globex-private"}), &wall))
}

func headMeta(t *testing.T, e env, key string) string {
	t.Helper()
	h, err := e.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key)})
	require.NoError(t, err)
	return h.Metadata["request-id"]
}

// noisyPNG is a side×side PNG that does not compress: over 5 MiB (a
// multipart upload) from about 1,200 px a side.
func noisyPNG(t *testing.T, side int, seed uint64) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, side, side))
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range img.Pix {
		img.Pix[i] = byte(r.Uint32())
	}
	var buf bytes.Buffer
	require.NoError(t, png.Encode(&buf, img))
	return buf.Bytes()
}
