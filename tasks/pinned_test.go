package tasks

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Fingerprints are kept on every record: a request submitted again is told
// apart from a new one by comparing them, so their values must not move when
// the request's fields are rearranged. These were computed before the
// parameters moved into Params.
func TestFingerprintValuesArePinned(t *testing.T) {
	no := false
	for _, tc := range []struct {
		name   string
		r      Request
		digest string
		want   string
	}{
		{"url", Request{RequestID: "r", ImageURL: "https://cdn.example.com/a.jpg", Params: Params{TargetWidth: 800, TargetHeight: 600}}, "",
			"gdHqzPA70LTC2962i6BS1w.bfo4LP02D_u1gJPo8BBuAGQ2CDkn72yO"},
		{"base64", Request{RequestID: "r", ImageBase64: "AAAA", Params: Params{TargetWidth: 300, TargetHeight: 200, BatchID: "b"}},
			"9f64a747e1b97f131fabb6b447296c9b6f0201e79fb3c5356e6c77e89b6a806a", "7HJtlmTHuMvj08u5E2uZqA.gLbHMcBFfNW1gJPo8BCqxWQ2CDkn72yO"},
		{"every field", Request{RequestID: "r", ImageURL: "https://cdn.example.com/a.jpg", Params: Params{TargetWidth: 800, TargetHeight: 600,
			Bucket: "shop", KeyTemplate: "a/{requestId}.{ext}", Metadata: map[string]string{"k": "v", "a": "b"}, BatchID: "b",
			CallbackURL: "https://h.example.com/", Priority: PriorityUrgent, Tenant: "acme"}, Dedup: &no}, "",
			"-SE4XlNjMJ1bpYHTN6glIQ.bfo4LP02D_vPp-29SL6qxfcZMNzS5_H_"},
		{"defaults", Request{RequestID: "r", ImageURL: "https://cdn.example.com/a.jpg", Params: Params{TargetWidth: 800, TargetHeight: 600,
			Priority: PriorityNormal, Tenant: DefaultTenant}}, "", "gdHqzPA70LTC2962i6BS1w.bfo4LP02D_u1gJPo8BBuAGQ2CDkn72yO"},
	} {
		// The tags of fields added later are dropped: a fingerprint grows a
		// tag per field (FingerprintDiff reads the shorter ones as before).
		assert.Equal(t, tc.want, FingerprintTags(tc.r.Fingerprint(tc.digest), 12), tc.name)
	}
}

// A payload's bytes are what queued tasks and backlog entries hold: its
// members keep their names, order and omissions.
func TestPayloadBytesArePinned(t *testing.T) {
	no := false
	p := CropPayload{Version: PayloadVersion, Request: Request{RequestID: "r", ImageURL: "https://cdn.example.com/a.jpg",
		Params: Params{TargetWidth: 800, TargetHeight: 600, Bucket: "shop", KeyTemplate: "a/{requestId}.{ext}", Metadata: map[string]string{"k": "v"},
			BatchID: "b", CallbackURL: "https://h.example.com/", Priority: PriorityUrgent, Tenant: "acme"}, Dedup: &no},
		Input: &InputRef{Bucket: "in", Key: "inputs/x", Size: 3, SHA256: "ab"}, Traceparent: "tp"}
	b, err := json.Marshal(p)
	require.NoError(t, err)
	assert.Equal(t, `{"v":1,"requestId":"r","imageUrl":"https://cdn.example.com/a.jpg","targetWidth":800,"targetHeight":600,`+
		`"bucket":"shop","keyTemplate":"a/{requestId}.{ext}","metadata":{"k":"v"},"batchId":"b","callbackUrl":"https://h.example.com/",`+
		`"priority":"urgent","tenant":"acme","dedup":false,"input":{"bucket":"in","key":"inputs/x","size":3,"sha256":"ab"},"traceparent":"tp"}`, string(b))
}
