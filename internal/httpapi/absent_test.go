package httpapi_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Absent has one spelling, leaving the member out: null is refused for every
// member of a crop request, and "" for every member whose schema has an enum
// or a minLength; "" for any other string member means absent, as the
// document says. Both entrances (one crop, a batch's item) follow the rule,
// which is read off the OpenAPI document, member by member.
func TestAbsentMeansLeftOut(t *testing.T) {
	_, doc := readDoc(t)
	schema := doc.Components.Schemas["CropRequest"].Value
	require.NotEmpty(t, schema.Properties)
	require.Contains(t, schema.Description, "null", "the schema says what null means")
	s, _ := newTenantServer(t)
	for name, prop := range schema.Properties {
		p := prop.Value
		for _, tc := range []struct {
			value  any
			refuse bool
		}{
			{nil, true},
			{"", p.Type.Is("string") && (len(p.Enum) > 0 || p.MinLength > 0)},
		} {
			if tc.value == "" && !p.Type.Is("string") {
				continue
			}
			body := crop("absent-"+name, 800)
			if name == "imageUrl" || name == "imageBase64" {
				// The other source is given, so that only this member is at fault.
				delete(body, "imageUrl")
				body["imageBase64"] = "aGVsbG8="
				if name == "imageBase64" {
					delete(body, "imageBase64")
					body["imageUrl"] = "https://cdn.example.com/x.jpg"
				}
			}
			body[name] = tc.value
			resp, raw := call(t, s, "POST", "/v1/crops", body, tokDefault)
			if !tc.refuse {
				assert.Equal(t, http.StatusAccepted, resp.StatusCode, "%s: %q means absent: %s", name, tc.value, raw)
				continue
			}
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %#v: %s", name, tc.value, raw)
			prob := decodeProblem(t, resp, raw)
			assert.Equal(t, name, prob.Field, "%s: %#v: %s", name, tc.value, raw)

			resp, raw = call(t, s, "POST", "/v1/crops/batch", map[string]any{"items": []any{body, crop("absent-ok", 800)}}, tokDefault)
			require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s: %s", name, raw)
			var batch struct {
				Results []struct {
					Outcome string `json:"outcome"`
					Error   struct {
						Field string `json:"field"`
					} `json:"error"`
				} `json:"results"`
			}
			require.NoError(t, json.Unmarshal(raw, &batch))
			require.Len(t, batch.Results, 2)
			assert.Equal(t, "invalid", batch.Results[0].Outcome, "%s in a batch item: %s", name, raw)
			assert.Equal(t, name, batch.Results[0].Error.Field, "%s in a batch item: %s", name, raw)
			assert.NotEqual(t, "invalid", batch.Results[1].Outcome, "the other item goes on: %s", raw)
		}
	}
}
