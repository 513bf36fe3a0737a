package tasks

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
)

func valid() CropPayload {
	return CropPayload{Version: PayloadVersion, Request: Request{RequestID: "sku-123_a:1", ImageURL: "https://cdn.example.com/p.jpg",
		Params: Params{TargetWidth: 800, TargetHeight: 600}}}
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
		{"callback private literal", func(p *CropPayload) { p.CallbackURL = "http://10.1.2.3/hook" }, "callbackUrl", "private"},
		{"callback hex loopback", func(p *CropPayload) { p.CallbackURL = "http://0x7f.1/hook" }, "callbackUrl", "loopback"},
		{"callback metadata", func(p *CropPayload) { p.CallbackURL = "http://169.254.169.254/" }, "callbackUrl", "169.254.169.254"},
		{"key template dotdot", func(p *CropPayload) { p.KeyTemplate = "../../x/{requestId}.{ext}" }, "keyTemplate", ".."},
		{"key template absolute", func(p *CropPayload) { p.KeyTemplate = "/x/{requestId}" }, "keyTemplate", "must not start with /"},
		{"key template placeholder", func(p *CropPayload) { p.KeyTemplate = "x/{sku}" }, "keyTemplate", "unknown placeholder"},
		{"key template ok", func(p *CropPayload) { p.KeyTemplate = "shop/{date}/{requestId}-{width}x{height}.{ext}" }, "", ""},
		{"bucket address", func(p *CropPayload) { p.Bucket = "10.0.0.1" }, "bucket", "IP address"},
		{"metadata reserved key", func(p *CropPayload) { p.Metadata = map[string]string{"width": "9"} }, "metadata", "cropq's own"},
		{"metadata too large in total", func(p *CropPayload) {
			p.Metadata = map[string]string{}
			for i := range 8 {
				p.Metadata[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", 250)
			}
		}, "metadata", "at most 1792 bytes"},
		{"metadata not UTF-8", func(p *CropPayload) { p.Metadata = map[string]string{"a": "x\xffy"} }, "metadata", "UTF-8"},
		{"key template not UTF-8", func(p *CropPayload) { p.KeyTemplate = "k/\xff/{requestId}" }, "keyTemplate", "UTF-8"},
		{"key template too long with webp", func(p *CropPayload) {
			p.RequestID = strings.Repeat("r", 128)
			p.KeyTemplate = strings.Repeat("{requestId}", 7) + strings.Repeat("{ext}", 42)
		}, "keyTemplate", "max 1024"},
		{"callback port", func(p *CropPayload) { p.CallbackURL = "https://hooks.example.com:99999/" }, "callbackUrl", "1–65535"},
		{"image port", func(p *CropPayload) { p.ImageURL = "https://cdn.example.com:0/a.jpg" }, "imageUrl", "1–65535"},
		{"callback long", func(p *CropPayload) { p.CallbackURL = "https://h.example.com/" + strings.Repeat("a", 2100) }, "callbackUrl", "at most 2048 bytes"},
		{"priority urgent", func(p *CropPayload) { p.Priority = PriorityUrgent }, "", ""},
		{"priority normal", func(p *CropPayload) { p.Priority = PriorityNormal }, "", ""},
		{"priority backfill", func(p *CropPayload) { p.Priority = PriorityBackfill }, "", ""},
		{"priority unknown", func(p *CropPayload) { p.Priority = "high" }, "priority", "one of urgent, normal, backfill"},
		{"priority other case", func(p *CropPayload) { p.Priority = "Urgent" }, "priority", "one of urgent, normal, backfill"},
		{"tenant ok", func(p *CropPayload) { p.Tenant = "acme.eu_2-b" }, "", ""},
		{"tenant default", func(p *CropPayload) { p.Tenant = DefaultTenant }, "", ""},
		{"tenant 64", func(p *CropPayload) { p.Tenant = strings.Repeat("t", 64) }, "", ""},
		{"tenant upper case", func(p *CropPayload) { p.Tenant = "ACME" }, "tenant", "a-z 0-9 . _ -"},
		{"tenant colon", func(p *CropPayload) { p.Tenant = "acme:eu" }, "tenant", "a-z 0-9 . _ -"},
		{"tenant space", func(p *CropPayload) { p.Tenant = "ac me" }, "tenant", "a-z 0-9 . _ -"},
		{"tenant 65", func(p *CropPayload) { p.Tenant = strings.Repeat("t", 65) }, "tenant", "at most 64 characters, got 65"},
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
	task, opts, err := NewCropTask(CropPayload{Request: Request{RequestID: "r1", ImageURL: "https://e.com/a.png", Params: Params{TargetWidth: 800, TargetHeight: 800}}}, Options{})
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

	_, _, err = NewCropTask(CropPayload{Request: Request{RequestID: "r1", ImageURL: "https://e.com/a.png", Params: Params{TargetWidth: 800}}}, Options{})
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
		"duplicate key": `{"v":1,"requestId":"a","requestId":"b","targetWidth":800,"targetHeight":800}`,
		"other case":    `{"v":1,"RequestId":"a","targetWidth":800,"targetHeight":800}`,
		"invalid UTF-8": "{\"v\":1,\"requestId\":\"a\xff\",\"targetWidth\":800,\"targetHeight\":800}",
	} {
		_, err := ParseCropPayload([]byte(in))
		assert.Error(t, err, name)
	}
}

// A payload as the previous version wrote it (CropPayload's fields before
// they moved into Request) is read unchanged by the strict decoder.
func TestParseCropPayloadReadsQueuedPayloads(t *testing.T) {
	old := `{"v":1,"requestId":"sku-1","imageUrl":"https://cdn.example.com/a.jpg","targetWidth":800,"targetHeight":600,` +
		`"bucket":"shop","keyTemplate":"a/{requestId}.{ext}","metadata":{"sku":"1"},"batchId":"b1",` +
		`"input":{"bucket":"in","key":"inputs/x","size":3,"sha256":"ab"},"callbackUrl":"https://h.example.com/","enqueuedAt":"2026-11-20T10:00:00Z"}`
	p, err := ParseCropPayload([]byte(old))
	require.NoError(t, err)
	assert.Equal(t, "sku-1", p.RequestID)
	assert.Equal(t, 600, p.TargetHeight)
	assert.Equal(t, map[string]string{"sku": "1"}, p.Metadata)
	assert.Equal(t, "inputs/x", p.Input.Key)
	assert.Equal(t, "https://h.example.com/", p.CallbackURL)
	again, err := json.Marshal(p)
	require.NoError(t, err)
	assert.JSONEq(t, old, string(again), "the wire format is unchanged")
}

// Changing any field of a request changes its fingerprint, and the
// difference names that field: the table is Request's fields themselves, so
// a field added later is covered without an edit here.
func TestFingerprintNamesEveryField(t *testing.T) {
	base := Request{RequestID: "r", ImageURL: "https://cdn.example.com/a.jpg", Params: Params{TargetWidth: 800, TargetHeight: 600, Bucket: "shop",
		KeyTemplate: "a/{requestId}.{ext}", Metadata: map[string]string{"k": "v"}, BatchID: "b", CallbackURL: "https://h.example.com/"}}
	fp := base.Fingerprint("")
	assert.Equal(t, fp, base.Fingerprint(""), "deterministic")
	other := base
	other.RequestID = "s"
	assert.Equal(t, fp, other.Fingerprint(""), "the id is not a parameter")
	assert.Equal(t, "imageBase64", FingerprintDiff(fp, base.Fingerprint("abc123")))
	for _, f := range Fields() {
		if f.Name == "requestId" || f.Name == "imageBase64" {
			continue
		}
		changed := base
		changed.Metadata = map[string]string{"k": "v"}
		switch f.Kind {
		case reflect.String:
			require.NoError(t, changed.SetText(f.Name, "x-other"))
		case reflect.Int:
			require.NoError(t, changed.SetText(f.Name, "777"))
		case reflect.Map:
			require.NoError(t, changed.SetText(f.Name, "k2=v2"))
		case reflect.Pointer: // *bool
			require.NoError(t, changed.SetText(f.Name, "false"))
		default:
			t.Fatalf("field %s: kind %s has no text form", f.Name, f.Kind)
		}
		assert.Equal(t, f.Name, FingerprintDiff(fp, changed.Fingerprint("")), "changing %s", f.Name)
		assert.Equal(t, f.Name, FingerprintDiff(changed.Fingerprint(""), fp), "changing %s back", f.Name)
	}
	// A fingerprint written before a field existed (callbackUrl, priority,
	// tenant and dedup, the last four, here) has no tag for it: the field
	// counts as empty there.
	noCallback := base
	noCallback.CallbackURL = ""
	now := noCallback.Fingerprint("")
	old := FingerprintTags(now, place(t, "callbackUrl"))
	assert.Equal(t, "", FingerprintDiff(old, now), "the same request, before and after the field was added")
	assert.Equal(t, "callbackUrl", FingerprintDiff(old, fp))
}

// place is the place of the field named name among a fingerprint's tags.
func place(t *testing.T, name string) int {
	t.Helper()
	for _, f := range Fields() {
		if f.Name == name {
			return f.FingerprintTag
		}
	}
	t.Fatalf("no field %s", name)
	return 0
}

// A field holding its default is the same request as the field left out:
// priority "normal", tenant "default" and dedup true keep the fingerprint of a request
// without them, and of a record written before the fields existed.
func TestFingerprintDefaults(t *testing.T) {
	base := Request{RequestID: "r", ImageURL: "https://cdn.example.com/a.jpg", Params: Params{TargetWidth: 800, TargetHeight: 600, BatchID: "b"}}
	fp := base.Fingerprint("")
	before := FingerprintTags(fp, place(t, "priority")) // as written before priority, tenant and dedup existed

	explicit := base
	yes := true
	explicit.Priority, explicit.Tenant, explicit.Dedup = PriorityNormal, DefaultTenant, &yes
	assert.Equal(t, fp, explicit.Fingerprint(""), "defaults are the fields left out")
	assert.Equal(t, "", FingerprintDiff(before, explicit.Fingerprint("")))
	assert.Equal(t, "", FingerprintDiff(explicit.Fingerprint(""), before))

	urgent := base
	urgent.Priority = PriorityUrgent
	assert.Equal(t, "priority", FingerprintDiff(fp, urgent.Fingerprint("")))
	assert.Equal(t, "priority", FingerprintDiff(before, urgent.Fingerprint("")))
	acme := base
	acme.Tenant = "acme"
	assert.Equal(t, "tenant", FingerprintDiff(fp, acme.Fingerprint("")))
	assert.Equal(t, "tenant", FingerprintDiff(before, acme.Fingerprint("")))

	defaults := map[string]string{}
	for _, f := range Fields() {
		if f.Default != "" {
			defaults[f.Name] = f.Default
		}
	}
	optOut := base
	require.NoError(t, optOut.SetText("dedup", "false"))
	assert.Equal(t, "dedup", FingerprintDiff(fp, optOut.Fingerprint("")))
	assert.Equal(t, "dedup", FingerprintDiff(before, optOut.Fingerprint("")))
	assert.Error(t, optOut.SetText("dedup", "maybe"))

	assert.Equal(t, map[string]string{"priority": "normal", "tenant": "default", "dedup": "true"}, defaults)
}

func TestEffectiveValuesAndValidateTenant(t *testing.T) {
	var r Request
	assert.Equal(t, PriorityNormal, r.EffectivePriority())
	assert.Equal(t, DefaultTenant, r.EffectiveTenant())
	r.Priority, r.Tenant = PriorityBackfill, "acme"
	assert.Equal(t, PriorityBackfill, r.EffectivePriority())
	assert.Equal(t, "acme", r.EffectiveTenant())
	assert.Equal(t, []string{"urgent", "normal", "backfill"}, Priorities)

	for _, ok := range []string{"a", "default", "acme", "a.b_c-d", "0", "..", strings.Repeat("z", MaxTenantLen)} {
		assert.NoError(t, ValidateTenant(ok), ok)
	}
	for bad, reason := range map[string]string{"": "required", "Acme": "a-z 0-9", "a:b": "a-z 0-9", "a,b": "a-z 0-9", "a=b": "a-z 0-9",
		"é": "a-z 0-9", "a b": "a-z 0-9", strings.Repeat("z", MaxTenantLen+1): "at most 64"} {
		err := ValidateTenant(bad)
		var ve *cropapi.ValidationError
		if assert.ErrorAs(t, err, &ve, bad) {
			assert.Equal(t, "tenant", ve.Field)
			assert.Contains(t, ve.Reason, reason, bad)
		}
	}
}

func TestSetText(t *testing.T) {
	var r Request
	require.NoError(t, r.SetText("targetWidth", " 800 "))
	require.NoError(t, r.SetText("metadata", "a=1"))
	require.NoError(t, r.SetText("metadata", `{"b":"2"}`))
	require.NoError(t, r.SetText("keyTemplate", "x/{requestId}"))
	require.NoError(t, r.SetText("priority", "urgent"))
	require.NoError(t, r.SetText("tenant", "acme"))
	assert.Equal(t, Request{Params: Params{TargetWidth: 800, Metadata: map[string]string{"a": "1", "b": "2"}, KeyTemplate: "x/{requestId}", Priority: "urgent", Tenant: "acme"}}, r)
	var ve *cropapi.ValidationError
	require.ErrorAs(t, r.SetText("targetHeight", "abc"), &ve)
	assert.Equal(t, "targetHeight", ve.Field)
	require.ErrorAs(t, r.SetText("metadata", "novalue"), &ve)
	assert.Equal(t, "metadata", ve.Field)
	require.ErrorAs(t, r.SetText("metadata", `{"a":1}`), &ve)
	require.ErrorAs(t, r.SetText("colour", "red"), &ve)
	assert.Equal(t, "colour", ve.Field)
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

// The trace context costs 72 bytes of payload with tracing on, nothing
// with it off, and a payload carrying it decodes strictly.
func TestTraceparentCost(t *testing.T) {
	p := valid()
	p.BatchID, p.Bucket, p.KeyTemplate = "catalogue-2026-12", "shop-crops", "{tenant}/{batchId}/{requestId}.{ext}"
	p.CallbackURL, p.Metadata = "https://hooks.example.com/cropq", map[string]string{"sku": "A-123"}
	off, err := json.Marshal(p)
	require.NoError(t, err)
	assert.NotContains(t, string(off), "traceparent")
	p.Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	on, err := json.Marshal(p)
	require.NoError(t, err)
	assert.Equal(t, 72, len(on)-len(off))
	assert.LessOrEqual(t, len(on), 600, "a typical payload stays within its budget: %s", on)
	back, err := ParseCropPayload(on)
	require.NoError(t, err)
	assert.Equal(t, p.Traceparent, back.Traceparent)
}
