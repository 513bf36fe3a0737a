package status_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/status"
)

// Records are stored as JSON and served as is: a record written before the
// request's parameters moved into tasks.Params reads back with every
// member, and is written again with the same members.
func TestRecordJSONIsPinned(t *testing.T) {
	for _, old := range []string{
		`{"requestId":"r","state":"queued","attempt":0,"createdAt":"2026-01-02T03:04:05Z","targetWidth":800,"targetHeight":600,` +
			`"source":"url","sourceUrl":"https://cdn.example.com/a.jpg","callbackUrl":"https://h.example.com/","batchId":"b",` +
			`"bucket":"shop","keyTemplate":"a/{requestId}.{ext}","metadata":{"k":"v"},"tenant":"acme","priority":"urgent",` +
			`"servedAs":"normal","fingerprint":"fp","paidCalls":0,"usage":0}`,
		`{"requestId":"s","state":"failed","attempt":0,"createdAt":"2026-01-02T03:04:05Z","paidCalls":0,"usage":0}`,
	} {
		var rec status.Record
		require.NoError(t, json.Unmarshal([]byte(old), &rec))
		again, err := json.Marshal(rec)
		require.NoError(t, err)
		assert.JSONEq(t, old, string(again))
	}
}
