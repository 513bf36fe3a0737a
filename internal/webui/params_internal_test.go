package webui

import (
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/cropq/cropq/tasks"
)

// The request page shows every parameter a record keeps: those it has a
// row of its own for, and any other (a field added to tasks.Params later)
// on a row of its name.
func TestRequestPageShowsEveryParameter(t *testing.T) {
	var names []string
	for _, f := range reflect.VisibleFields(reflect.TypeFor[tasks.Params]()) {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		names = append(names, name)
	}
	assert.Subset(t, names, shownByName, "shownByName names fields of tasks.Params")

	all := tasks.Params{TargetWidth: 800, TargetHeight: 600, Bucket: "shop", KeyTemplate: "k", Metadata: map[string]string{"k": "v"},
		BatchID: "b", CallbackURL: "https://h.example.com/", Priority: "urgent", Tenant: "acme"}
	assert.Empty(t, otherParams(all, shownByName), "the fields with rows of their own are not repeated")
	assert.Empty(t, otherParams(tasks.Params{}, shownByName))

	assert.Equal(t, []param{{"bucket", "shop"}, {"priority", "urgent"}},
		otherParams(tasks.Params{TargetWidth: 800, Bucket: "shop", Priority: "urgent"}, []string{"targetWidth", "targetHeight"}))
}
