package requestfile_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/requestfile"
)

func TestFormatOf(t *testing.T) {
	for name, want := range map[string]requestfile.Format{"a.jsonl": requestfile.JSONL, "dir/B.NDJSON": requestfile.JSONL, "c.csv": requestfile.CSV} {
		got, err := requestfile.FormatOf(name)
		require.NoError(t, err, name)
		assert.Equal(t, want, got, name)
	}
	_, err := requestfile.FormatOf("d.json")
	assert.Error(t, err)
}

func TestParseJSONNamesTheField(t *testing.T) {
	for _, tc := range []struct{ line, field, id string }{
		{`{"requestId":"a","targetWidth":"wide"}`, "targetWidth", "a"},
		{`{"requestId":"a","colour":"red"}`, "colour", "a"},
		{`{"requestId":"a",`, "", ""},
	} {
		req, err := requestfile.ParseJSON([]byte(tc.line))
		require.Error(t, err, tc.line)
		assert.Equal(t, tc.id, req.RequestID, tc.line)
		var ve *cropapi.ValidationError
		if tc.field != "" {
			require.True(t, errors.As(err, &ve), "%s: %v", tc.line, err)
			assert.Equal(t, tc.field, ve.Field)
		}
	}
	req, err := requestfile.ParseJSON([]byte(`{"requestId":"a","imageUrl":"https://x.example/1.jpg","targetWidth":400,"targetHeight":300,"priority":"urgent"}`))
	require.NoError(t, err)
	assert.Equal(t, "urgent", req.Priority)
}

func TestCSVLines(t *testing.T) {
	_, err := requestfile.ParseCSVHeaderLine([]byte("requestId,targetWidth"))
	assert.ErrorContains(t, err, `missing column "targetHeight"`)
	_, err = requestfile.ParseCSVHeaderLine([]byte("requestId,targetWidth,targetHeight,colour"))
	assert.ErrorContains(t, err, `unknown column "colour"`)

	h, err := requestfile.ParseCSVHeaderLine([]byte("\ufeffrequestId,imageUrl,targetWidth,targetHeight,metadata"))
	require.NoError(t, err)
	req, err := h.ParseCSVLine([]byte(`a,https://x.example/1.jpg,400,300,"{""sku"":""1""}"`))
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"sku": "1"}, req.Metadata)
	assert.Equal(t, 400, req.TargetWidth)

	_, err = h.ParseCSVLine([]byte(`b,https://x.example/1.jpg,wide,300,`))
	var ve *cropapi.ValidationError
	require.True(t, errors.As(err, &ve), "%v", err)
	assert.Equal(t, "targetWidth", ve.Field)

	// A quoted cell holding a line break: a manifest's lines are split
	// first, so its first half is an unterminated quote.
	_, err = h.ParseCSVLine([]byte(`c,"https://x.example/`))
	assert.ErrorContains(t, err, "csv:")
}

func TestRowsCountLines(t *testing.T) {
	next := requestfile.JSONLRows(strings.NewReader("{\"requestId\":\"a\"}\n\n{\"requestId\":\"b\",\"x\":1}\n"))
	r, ok := next()
	require.True(t, ok)
	assert.EqualValues(t, 1, r.Line)
	assert.NoError(t, r.Err)
	r, ok = next()
	require.True(t, ok)
	assert.EqualValues(t, 3, r.Line, "blank lines count")
	assert.Error(t, r.Err)
	_, ok = next()
	assert.False(t, ok)
}
