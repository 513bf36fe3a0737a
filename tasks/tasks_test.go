package tasks

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
)

func valid() CropPayload {
	return CropPayload{Version: PayloadVersion, Request: Request{RequestID: "sku-123_a:1", ImageURL: "https://cdn.example.com/p.jpg", TargetWidth: 800, TargetHeight: 600}}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*CropPayload)
		field  string
		reason string
	}{
		{"valid", func(p *CropPayload) {}, "", ""},
		{"metadata ok", func(p *CropPayload) { p.Metadata = map[string]string{"sku": "A-1"} }, "", ""},
		{"bad version", func(p *CropPayload) { p.Version = 2 }, "v", "version 2"},
		{"empty id", func(p *CropPayload) { p.RequestID = "" }, "requestId", "required"},
		{"id with slash", func(p *CropPayload) { p.RequestID = "a/b" }, "requestId", "only letters"},
		{"id with dotdot", func(p *CropPayload) { p.RequestID = "a..b" }, "requestId", `no ".."`},
		{"id is dotdot", func(p *CropPayload) { p.RequestID = ".." }, "requestId", "start with"},
		{"id control char", func(p *CropPayload) { p.RequestID = "a\nb" }, "requestId", "only letters"},
		{"id 10KB", func(p *CropPayload) { p.RequestID = strings.Repeat("a", 10240) }, "requestId", "at most 128 characters, got 10240"},
		{"width 99", func(p *CropPayload) { p.TargetWidth = 99 }, "targetWidth", "between 100 and 5000"},
		{"no source", func(p *CropPayload) { p.ImageURL = "" }, "imageUrl", "one of"},
		{"both sources", func(p *CropPayload) { p.ImageBase64 = "iVBORw0KGgo=" }, "imageUrl", "exactly one image source"},
		{"bad bucket", func(p *CropPayload) { p.Bucket = "Bad_Bucket" }, "bucket", "valid S3 bucket"},
		{"bad batch", func(p *CropPayload) { p.BatchID = "x/y" }, "batchId", "only letters"},
		{"metadata key", func(p *CropPayload) { p.Metadata = map[string]string{"Bad Key": "v"} }, "metadata", "lower-case"},
		{"metadata value", func(p *CropPayload) { p.Metadata = map[string]string{"k": "a\x00b"} }, "metadata", "printable"},
		{"long template", func(p *CropPayload) { p.KeyTemplate = strings.Repeat("x", 600) }, "keyTemplate", "at most 512"},
		{"claim check", func(p *CropPayload) { p.ImageURL, p.Input = "", &InputRef{Bucket: "inputs", Key: "in/a", Size: 10} }, "", ""},
		{"claim check and url", func(p *CropPayload) { p.Input = &InputRef{Bucket: "inputs", Key: "in/a", Size: 10} }, "input", "only one source"},
		{"claim check no key", func(p *CropPayload) { p.ImageURL, p.Input = "", &InputRef{Bucket: "inputs", Size: 10} }, "input.key", "1–1024"},
		{"claim check bad target", func(p *CropPayload) {
			p.ImageURL, p.Input, p.TargetHeight = "", &InputRef{Bucket: "inputs", Key: "k", Size: 1}, 6000
		}, "targetHeight", "between 100 and 5000"},
		{"callback ok", func(p *CropPayload) { p.CallbackURL = "https://hooks.example.com/cropq?x=1" }, "", ""},
		{"callback ftp", func(p *CropPayload) { p.CallbackURL = "ftp://hooks.example.com/" }, "callbackUrl", "absolute http or https"},
		{"callback relative", func(p *CropPayload) { p.CallbackURL = "/hook" }, "callbackUrl", "absolute"},
		{"callback credentials", func(p *CropPayload) { p.CallbackURL = "https://u:p@hooks.example.com/" }, "callbackUrl", "credentials"},
		{"callback long", func(p *CropPayload) { p.CallbackURL = "https://h.example.com/" + strings.Repeat("a", 2100) }, "callbackUrl", "at most 2048 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid()
			tt.mutate(&p)
			err := p.Validate(Rules{Limits: cropapi.DefaultLimits()})
			if tt.field == "" {
				require.NoError(t, err)
				return
			}
			var ve *cropapi.ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Equal(t, tt.field, ve.Field)
			assert.Contains(t, ve.Reason, tt.reason)
		})
	}
}

func TestNewCropTask(t *testing.T) {
	task, opts, err := NewCropTask(CropPayload{Request: Request{RequestID: "r1", ImageURL: "https://e.com/a.png", TargetWidth: 800, TargetHeight: 800}}, Options{})
	require.NoError(t, err)
	assert.Equal(t, TypeCrop, task.Type())

	p, err := ParseCropPayload(task.Payload())
	require.NoError(t, err)
	assert.Equal(t, PayloadVersion, p.Version)
	assert.Equal(t, "r1", p.RequestID)
	assert.False(t, p.EnqueuedAt.IsZero())

	var types []asynq.OptionType
	values := map[asynq.OptionType]any{}
	for _, o := range opts {
		types = append(types, o.Type())
		values[o.Type()] = o.Value()
	}
	assert.ElementsMatch(t, []asynq.OptionType{asynq.TaskIDOpt, asynq.QueueOpt, asynq.MaxRetryOpt, asynq.TimeoutOpt, asynq.RetentionOpt}, types)
	assert.Equal(t, "r1", values[asynq.TaskIDOpt])
	assert.Equal(t, DefaultQueue, values[asynq.QueueOpt])

	_, _, err = NewCropTask(CropPayload{Request: Request{RequestID: "r1", ImageURL: "https://e.com/a.png", TargetWidth: 800}}, Options{})
	var ve *cropapi.ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "targetHeight", ve.Field)
}

func TestParseCropPayloadIsStrict(t *testing.T) {
	good, err := json.Marshal(valid())
	require.NoError(t, err)
	_, err = ParseCropPayload(good)
	require.NoError(t, err)

	for name, in := range map[string]string{
		"unknown field": `{"v":1,"requestId":"a","targetWidth":800,"targetHeight":800,"extra":1}`,
		"wrong type":    `{"v":1,"requestId":"a","targetWidth":"800","targetHeight":800}`,
		"trailing data": string(good) + `{}`,
		"version":       `{"v":9,"requestId":"a"}`,
		"malformed":     `{"v":1,`,
	} {
		_, err := ParseCropPayload([]byte(in))
		assert.Error(t, err, name)
	}
}

func FuzzParseAndValidate(f *testing.F) {
	good, _ := json.Marshal(valid())
	f.Add(good)
	f.Add([]byte(`{"v":1,"requestId":"../x","imageBase64":"AAAA","targetWidth":1,"targetHeight":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseCropPayload(b)
		if err != nil {
			return
		}
		_ = p.Validate(Rules{Limits: cropapi.DefaultLimits()})
	})
}
