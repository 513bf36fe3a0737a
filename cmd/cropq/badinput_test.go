package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/tasks"
)

// bombPNG is a valid PNG header claiming w×h pixels, with no image data.
func bombPNG(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2
	_ = binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	_ = binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

// Bad input through every entrance (HTTP API, CLI, library) is refused with
// a message naming the field, and leaves nothing in Redis or S3.
func TestBadInputEverywhere(t *testing.T) {
	s := newStack(t, stackOptions{})
	apiAddr := freeAddr(t)
	// These entrances run as in production: private image URLs refused.
	s.env = append(s.env, "CROPQ_API_TOKENS=bad-token-0123456789", "CROPQ_API_ADDR="+apiAddr, "CROPQ_API_MAX_BODY_BYTES=65536",
		"CROPQ_ALLOW_PRIVATE_IMAGE_URLS=false")
	s.start("api", "api")
	base := "http://" + apiAddr
	s.awaitHTTP(base + "/healthz")
	prod := producer.New(s.rdb, producer.Config{})
	t.Cleanup(func() { _ = prod.Close() })

	notB64 := "!!!not base64!!!"
	notImage := base64.StdEncoding.EncodeToString([]byte("just some text, not an image at all"))
	bomb := base64.StdEncoding.EncodeToString(bombPNG(100_000, 100_000))
	okImage := base64.StdEncoding.EncodeToString(bombPNG(800, 800)) // a header the API would accept
	crop := func(id string, extra string) string {
		return `{"requestId":"` + id + `","imageUrl":"https://cdn.example.com/a.jpg","targetWidth":800,"targetHeight":800` + extra + `}`
	}
	withSource := func(id, src string) string {
		return `{"requestId":"` + id + `",` + src + `,"targetWidth":800,"targetHeight":800}`
	}
	cases := []struct {
		name   string
		body   string
		field  string // named in the message ("" for bodies that are not JSON crop requests)
		status int
		noLib  bool // not expressible through the typed library
	}{
		{"malformed JSON", `{"requestId":`, "", 400, true},
		{"extra field", crop("x-extra", `,"colour":"red"`), "colour", 400, true},
		{"wrong type", `{"requestId":"x-type","imageUrl":"https://cdn.example.com/a.jpg","targetWidth":"800","targetHeight":800}`, "targetWidth", 400, true},
		{"missing target", `{"requestId":"x-miss","imageUrl":"https://cdn.example.com/a.jpg","targetWidth":800}`, "targetHeight", 400, false},
		{"target 99", strings.Replace(crop("x-99", ""), `"targetWidth":800`, `"targetWidth":99`, 1), "targetWidth", 400, false},
		{"target 5001", strings.Replace(crop("x-5001", ""), `"targetWidth":800`, `"targetWidth":5001`, 1), "targetWidth", 400, false},
		{"target negative", strings.Replace(crop("x-neg", ""), `"targetHeight":800`, `"targetHeight":-5`, 1), "targetHeight", 400, false},
		{"target huge", strings.Replace(crop("x-huge", ""), `"targetWidth":800`, `"targetWidth":1000000000000`, 1), "targetWidth", 400, false},
		{"no source", `{"requestId":"x-none","targetWidth":800,"targetHeight":800}`, "imageUrl", 400, false},
		{"both sources", withSource("x-both", `"imageUrl":"https://cdn.example.com/a.jpg","imageBase64":"`+okImage+`"`), "imageUrl", 400, false},
		{"base64 not base64", withSource("x-b64", `"imageBase64":"`+notB64+`"`), "imageBase64", 400, false},
		{"base64 not an image", withSource("x-txt", `"imageBase64":"`+notImage+`"`), "imageBase64", 400, false},
		{"decompression bomb", withSource("x-bomb", `"imageBase64":"`+bomb+`"`), "imageBase64", 400, false},
		{"file URL", withSource("x-file", `"imageUrl":"file:///etc/passwd"`), "imageUrl", 400, false},
		{"gopher URL", withSource("x-gopher", `"imageUrl":"gopher://cdn.example.com/a"`), "imageUrl", 400, false},
		{"URL with credentials", withSource("x-cred", `"imageUrl":"https://user:pw@cdn.example.com/a.jpg"`), "imageUrl", 400, false},
		{"loopback URL", withSource("x-loop", `"imageUrl":"http://127.0.0.1:6379/a.jpg"`), "imageUrl", 400, false},
		{"link-local URL", withSource("x-meta", `"imageUrl":"http://169.254.169.254/latest/meta-data/"`), "imageUrl", 400, false},
		{"private URL", withSource("x-priv", `"imageUrl":"http://10.0.0.7/a.jpg"`), "imageUrl", 400, false},
		{"id with slash", crop("a/b", ""), "requestId", 400, false},
		{"id with dotdot", crop("a..b", ""), "requestId", 400, false},
		{"id with control char", crop(`a\u0007b`, ""), "requestId", 400, false},
		{"id of 10 KB", crop(strings.Repeat("a", 10240), ""), "requestId", 400, false},
		{"body over the limit", withSource("x-big", `"imageBase64":"`+strings.Repeat("A", 70000)+`"`), "", 413, true},

		// Destinations that would only fail after the paid crop.
		{"key template dotdot", crop("x-kt1", `,"keyTemplate":"../../x/{requestId}.{ext}"`), "keyTemplate", 400, false},
		{"key template absolute", crop("x-kt2", `,"keyTemplate":"/abs/{requestId}.{ext}"`), "keyTemplate", 400, false},
		{"key template unknown placeholder", crop("x-kt3", `,"keyTemplate":"a/{sku}/{requestId}.{ext}"`), "keyTemplate", 400, false},
		{"key template empty segment", crop("x-kt4", `,"keyTemplate":"a//{requestId}.{ext}"`), "keyTemplate", 400, false},
		{"bucket upper case", crop("x-bk1", `,"bucket":"Bad_Bucket"`), "bucket", 400, false},
		{"bucket is an address", crop("x-bk2", `,"bucket":"192.168.1.1"`), "bucket", 400, false},

		// Other spellings of loopback and private addresses.
		{"hex loopback URL", withSource("x-hex", `"imageUrl":"http://0x7f.0.0.1/a.jpg"`), "imageUrl", 400, false},
		{"decimal loopback URL", withSource("x-dec", `"imageUrl":"http://2130706433/a.jpg"`), "imageUrl", 400, false},
		{"octal loopback URL", withSource("x-oct", `"imageUrl":"http://0177.0.0.1/a.jpg"`), "imageUrl", 400, false},
		{"short loopback URL", withSource("x-short", `"imageUrl":"http://127.1/a.jpg"`), "imageUrl", 400, false},
		{"zero host URL", withSource("x-zero", `"imageUrl":"http://0/a.jpg"`), "imageUrl", 400, false},
		{"mapped loopback URL", withSource("x-mapped", `"imageUrl":"http://[::ffff:127.0.0.1]/a.jpg"`), "imageUrl", 400, false},
		{"fullwidth digits URL", withSource("x-fw", `"imageUrl":"http://１２７.０.０.１/a.jpg"`), "imageUrl", 400, false},
		{"circled localhost URL", withSource("x-circ", `"imageUrl":"http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/a.jpg"`), "imageUrl", 400, false},
		{"decimal metadata URL", withSource("x-meta2", `"imageUrl":"http://2852039166/latest/"`), "imageUrl", 400, false},
		{"callback private", crop("x-cb1", `,"callbackUrl":"http://10.0.0.7/hook"`), "callbackUrl", 400, false},
		{"callback metadata", crop("x-cb2", `,"callbackUrl":"http://169.254.169.254/latest/meta-data/"`), "callbackUrl", 400, false},
		{"callback hex loopback", crop("x-cb3", `,"callbackUrl":"http://0x7f.1/hook"`), "callbackUrl", 400, false},
		{"callback localhost", crop("x-cb4", `,"callbackUrl":"http://LOCALHOST./hook"`), "callbackUrl", 400, false},

		// Strict JSON.
		{"duplicate key", `{"requestId":"x-dupkey","requestId":"x-dupkey2","imageUrl":"https://cdn.example.com/a.jpg","targetWidth":800,"targetHeight":800}`, "requestId", 400, true},
		{"field in another case", crop("x-case", `,"TargetWidth":800`), "TargetWidth", 400, true},
		{"second JSON value", crop("x-second", "") + ` {"requestId":"x-third"}`, "", 400, true},
		{"invalid UTF-8", crop("x-utf8", ",\"metadata\":{\"k\":\"a\xffb\"}"), "", 400, true},
		{"metadata not strings", crop("x-mdtype", `,"metadata":{"k":1}`), "metadata.k", 400, true},

		// Absent has one spelling, leaving the member out (issue 21).
		{"null priority", crop("x-nullprio", `,"priority":null`), "priority", 400, true},
		{"empty priority", crop("x-emptyprio", `,"priority":""`), "priority", 400, true},
		{"null tenant", crop("x-nullten", `,"tenant":null`), "tenant", 400, true},
		{"empty tenant", crop("x-emptyten", `,"tenant":""`), "tenant", 400, true},
		{"null dedup", crop("x-nulldedup", `,"dedup":null`), "dedup", 400, true},
		{"empty bucket", crop("x-emptybk", `,"bucket":""`), "bucket", 400, true},
		{"null metadata", crop("x-nullmd", `,"metadata":null`), "metadata", 400, true},
	}
	dir := t.TempDir()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// HTTP API.
			code, ctype, b := apiDo(t, http.MethodPost, base+"/v1/crops", "bad-token-0123456789", tc.body)
			assert.Equal(t, tc.status, code, "HTTP: %s", b)
			assert.Equal(t, "application/problem+json", ctype)
			var pr httpapi.Problem
			require.NoError(t, json.Unmarshal(b, &pr), "%s", b)
			assert.True(t, strings.HasPrefix(pr.Type, "https://cropq.dev/problems/"), pr.Type)
			if tc.field != "" {
				assert.Equal(t, tc.field, pr.Field, "HTTP names the field: %s", b)
			}
			for _, leak := range []string{"httpapi.", "tasks.", "Go struct", "Go value", "of type"} {
				assert.NotContains(t, pr.Detail, leak, "no Go type names")
			}

			// CLI, bulk file of one line.
			if tc.status != 413 {
				path := filepath.Join(dir, fmt.Sprintf("case%d.jsonl", i))
				require.NoError(t, os.WriteFile(path, []byte(tc.body+"\n"), 0o644))
				out, err := s.cropq("enqueue", "--file", path, "--no-progress")
				require.Error(t, err, "CLI: %s", out)
				assert.Contains(t, out, "1 invalid")
				if tc.field != "" {
					assert.Contains(t, err.Error(), tc.field, "CLI names the field")
				}
			}

			// Library.
			if !tc.noLib {
				var c httpapi.CropRequest
				require.NoError(t, json.Unmarshal([]byte(tc.body), &c))
				res := prod.Enqueue(context.Background(), c)
				assert.Equal(t, producer.Invalid, res.Outcome)
				var ve *cropapi.ValidationError
				require.True(t, errors.As(res.Err, &ve), "library: %v", res.Err)
				assert.Equal(t, tc.field, ve.Field)
			}
		})
	}

	// A request id used again with other parameters: refused everywhere.
	require.Equal(t, producer.Enqueued, prod.Enqueue(context.Background(), tasks.Request{RequestID: "dup-1",
		ImageURL: "https://cdn.example.com/a.jpg", Params: tasks.Params{TargetWidth: 800, TargetHeight: 800}}).Outcome)
	code, _, b := apiDo(t, http.MethodPost, base+"/v1/crops", "bad-token-0123456789", strings.Replace(crop("dup-1", ""), `"targetWidth":800`, `"targetWidth":400`, 1))
	assert.Equal(t, http.StatusConflict, code)
	assert.Contains(t, string(b), "targetWidth")
	_, err := s.cropq("enqueue", "--request-id", "dup-1", "--url", "https://cdn.example.com/a.jpg", "--width", "800", "--height", "640")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "targetHeight")
	res := prod.Enqueue(context.Background(), tasks.Request{RequestID: "dup-1", ImageURL: "https://cdn.example.com/b.jpg", Params: tasks.Params{TargetWidth: 800, TargetHeight: 800}})
	assert.Equal(t, producer.Conflict, res.Outcome)

	// Nothing was left behind but the one valid request.
	keys, err := s.rdb.Keys(context.Background(), rediskey.Default.StatusPattern()).Result()
	require.NoError(t, err)
	assert.Equal(t, []string{rediskey.Default.Status("dup-1")}, keys)
	info, err := asynq.NewInspectorFromRedisClient(s.rdb).GetQueueInfo(tasks.DefaultQueue)
	require.NoError(t, err)
	assert.Equal(t, 1, info.Size)
	n := 0
	for _, k := range []string{"inputs/", "crops/"} {
		out, err := s.s3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &k})
		require.NoError(t, err)
		n += len(out.Contents)
	}
	assert.Zero(t, n, "nothing in S3")
}
