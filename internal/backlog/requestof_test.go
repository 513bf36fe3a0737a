package backlog

import (
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// An id-only entry is fed as the request its record describes: every
// parameter the record keeps (tasks.Params, set here field by field from
// the model, so a field added later is covered) comes back.
func TestRequestOfGivesBackEveryParameter(t *testing.T) {
	req := tasks.Request{RequestID: "r", ImageURL: "https://cdn.example.com/a.jpg"}
	other := map[reflect.Kind]string{reflect.String: "x-other", reflect.Int: "777", reflect.Map: "k=v"}
	for _, f := range reflect.VisibleFields(reflect.TypeFor[tasks.Params]()) {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		text, ok := other[f.Type.Kind()]
		require.True(t, ok, "field %s: kind %s", name, f.Type.Kind())
		require.NoError(t, req.SetText(name, text))
	}
	rec := status.Record{RequestID: req.RequestID, Params: req.Params.Effective(), Source: "url", SourceURL: req.ImageURL}
	assert.Equal(t, req, RequestOf(rec))
}
