package tasks

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/strictjson"
)

// Every field of a request says whether it changes the result (and so joins
// the crop key, under which dedup reuses a stored result) and where its tag
// sits in the fingerprint (by which a request id submitted again with other
// parameters is a conflict), as every error code says whether it is paid
// for: a field added without deciding fails here, not in production as a
// wrong reuse or a silent "known".
func TestEveryFieldHasItsDecisions(t *testing.T) {
	parts := []string{CropKeyValue, CropKeyNone, CropKeySource, CropKeySize, CropKeyTenant}
	var notParameters []string
	var places []int
	for _, f := range Fields() {
		assert.Contains(t, parts, f.CropKey, "field %s: tag cropkey must be one of %v (see Request)", f.Name, parts)
		switch f.FingerprintTag {
		case -1:
			notParameters = append(notParameters, f.Name)
		default:
			places = append(places, f.FingerprintTag)
		}
	}
	for _, f := range Fields() {
		if f.FingerprintTag == -1 {
			// Either "-" or a number: anything else (a missing tag) is undecided.
			assert.Equal(t, "-", fingerprintTag(t, f.Name), "field %s: tag fingerprint must be - or its place (see Request)", f.Name)
		}
	}
	// Only the id is not a parameter: another field left out of the
	// fingerprint makes a request submitted again with another value of it
	// "known", its new value silently dropped.
	assert.Equal(t, []string{"requestId"}, notParameters)
	// Places are 0, 1, 2, …: each once, none skipped (a fingerprint names
	// the field that differs by the place of its tag).
	slices.Sort(places)
	for i, p := range places {
		require.Equal(t, i, p, "fingerprint places must be 0…%d, each once: got %v", len(places)-1, places)
	}
}

// fingerprintTag is the fingerprint tag of the field named name, as written.
func fingerprintTag(t *testing.T, name string) string {
	t.Helper()
	for _, f := range reflect.VisibleFields(reflect.TypeFor[Request]()) {
		if json, _, _ := strings.Cut(f.Tag.Get("json"), ","); json == name && !f.Anonymous {
			return f.Tag.Get("fingerprint")
		}
	}
	t.Fatalf("no field %s", name)
	return ""
}

// The places are the fields' order when fingerprints were made from it:
// fingerprints kept on records keep naming the right field.
func TestFingerprintPlacesAreTheFirstOrder(t *testing.T) {
	var names []string
	for _, f := range fingerprinted {
		names = append(names, f.Name)
	}
	assert.Equal(t, []string{"imageUrl", "imageBase64", "targetWidth", "targetHeight", "bucket", "keyTemplate", "metadata", "batchId",
		"callbackUrl", "priority", "tenant", "dedup"}, names[:12])
	for i, f := range fingerprinted {
		assert.Equal(t, strconv.Itoa(i), fingerprintTag(t, f.Name))
	}
}

// A field tagged cropkey "value" joins the crop key when set, and leaves the
// keys of requests without it unchanged (no field is tagged so yet: bucket
// stands in for one here).
func TestCropKeyValues(t *testing.T) {
	fields := Fields()
	for i := range fields {
		if fields[i].Name == "bucket" {
			fields[i].CropKey = CropKeyValue
		}
	}
	r := Request{RequestID: "r", ImageURL: "https://cdn.example.com/a.jpg", Params: Params{TargetWidth: 800, TargetHeight: 600}}
	assert.Empty(t, r.cropKeyValues(fields), "unset: the key is as before")
	assert.Empty(t, r.CropKeyValues(), "no field is tagged value yet")
	r.Bucket = "shop"
	shop := r.cropKeyValues(fields)
	assert.NotEmpty(t, shop)
	r.Bucket = "other"
	assert.NotEqual(t, shop, r.cropKeyValues(fields))
	r.Priority = PriorityUrgent
	assert.Equal(t, r.cropKeyValues(fields), Request{Params: Params{Bucket: "other"}}.cropKeyValues(fields), "fields tagged - stay out")
}

// "" is refused for a field tagged strictjson:"nonempty" in Params as in
// Request itself (Params is inlined explicitly), and a payload still takes
// it, as before (its request is embedded, not inlined).
func TestNonEmptyHoldsInParams(t *testing.T) {
	for _, name := range []string{"imageUrl", "bucket", "batchId", "priority", "tenant"} {
		var r Request
		err := strictjson.Unmarshal([]byte(`{"requestId":"a","`+name+`":""}`), &r)
		var je *strictjson.Error
		if assert.ErrorAs(t, err, &je, name) {
			assert.Equal(t, name, je.Field)
		}
	}
	_, err := ParseCropPayload([]byte(`{"v":1,"requestId":"a","bucket":""}`))
	assert.NoError(t, err)
}
