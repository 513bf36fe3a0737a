package dedup_test

import (
	"context"
	"encoding/base64"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/tasks"
)

// Crop keys are stored in Redis (the dedup index): their values must not
// move when the request's fields are rearranged, or every stored result
// stops being found. These were computed before the parameters moved into
// tasks.Params.
func TestKeyValuesArePinned(t *testing.T) {
	tenant := dedup.Keyer{Scope: dedup.ScopeTenant, Variant: "https://api.example"}
	global := dedup.Keyer{Scope: dedup.ScopeGlobal, Variant: "https://api.example"}
	every := func(p *tasks.CropPayload) {
		p.Bucket, p.KeyTemplate, p.Metadata, p.BatchID = "shop", "a/{requestId}.{ext}", map[string]string{"k": "v"}, "b"
		p.CallbackURL, p.Priority, p.Tenant = "https://h.example.com/", tasks.PriorityUrgent, "acme"
	}
	for _, tc := range []struct {
		name string
		k    dedup.Keyer
		p    tasks.CropPayload
		want string
	}{
		{"url", tenant, payload(nil), "dpA8uEaRgPaToAQERm04DA"},
		{"url, every field", tenant, payload(every), "Gz3DzC6rL95LZ3sz_ENxqw"},
		{"url, global", global, payload(every), "2YBxByUocd9PqPyVPT4Kdg"},
		{"base64", tenant, payload(func(p *tasks.CropPayload) {
			p.ImageURL, p.ImageBase64 = "", base64.StdEncoding.EncodeToString([]byte("the same image bytes"))
		}), "u_LnBFd5dle_DPFfLs2BYQ"},
	} {
		got, err := tc.k.Key(context.Background(), tc.p)
		require.NoError(t, err)
		assert.Equal(t, tc.want, got, tc.name)
	}
}

// The crop key follows each field's cropkey tag (tasks.Request): a field
// tagged "-" leaves it as it is, any other changes it. The table is the
// request's fields themselves, so a field added later is covered here
// without an edit.
func TestKeyFollowsTheFieldsTags(t *testing.T) {
	ctx := context.Background()
	k := dedup.Keyer{Scope: dedup.ScopeTenant, Variant: "https://api.example"}
	base, err := k.Key(ctx, payload(nil))
	require.NoError(t, err)
	other := map[reflect.Kind]string{reflect.String: "x-other", reflect.Int: "777", reflect.Map: "k2=v2", reflect.Pointer: "true"}
	for _, f := range tasks.Fields() {
		text := other[f.Kind]
		switch f.Name {
		case "requestId":
			text = "r2"
		case "imageUrl":
			text = "https://cdn.example.com/other.jpg"
		case "imageBase64":
			text = base64.StdEncoding.EncodeToString([]byte("other image bytes"))
		}
		require.NotEmpty(t, text, "field %s: kind %s has no text form here", f.Name, f.Kind)
		p := payload(nil)
		require.NoError(t, p.SetText(f.Name, text))
		got, err := k.Key(ctx, p)
		require.NoError(t, err)
		assert.Equal(t, f.CropKey == tasks.CropKeyNone, got == base, "field %s is tagged cropkey:%q", f.Name, f.CropKey)
	}
}
