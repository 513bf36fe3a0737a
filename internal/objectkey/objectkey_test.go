package objectkey

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRender(t *testing.T) {
	tests := []struct {
		tmpl, id, want, errText string
	}{
		{"", "sku-1", "crops/sku-1/800x600.png", ""},
		{"a/{requestId}/b.{ext}", "../x", "a/..%2Fx/b.png", ""},
		{"a/{requestId}.{ext}", "..", "a/%2E%2E.png", ""},
		{"a/{requestId}/{ext}", "..", "a/%2E%2E/png", ""},
		{"a/{requestId}/x", "a\x00b\nc", "a/a%00b%0Ac/x", ""},
		{"/abs/{requestId}", "x", "", "must not start with /"},
		{"a/{nope}/{requestId}", "x", "", "unknown placeholder"},
		{"a//{requestId}", "x", "", "empty"},
		{"a/{requestId}", string(bytes.Repeat([]byte("x"), 2000)), "", "max 1024"},
	}
	for _, tt := range tests {
		got, err := Render(tt.tmpl, Vars{RequestID: tt.id, Width: 800, Height: 600, Ext: "png"})
		if tt.errText != "" {
			var ke *Error
			require.True(t, errors.As(err, &ke), "%q: %v", tt.tmpl, err)
			assert.Contains(t, err.Error(), tt.errText)
			continue
		}
		require.NoError(t, err, tt.tmpl)
		if tt.want != "" {
			assert.Equal(t, tt.want, got)
		}
		assert.NotContains(t, "/"+got+"/", "/../")
	}
}
