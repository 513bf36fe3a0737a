package strictjson

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/go-json-experiment/json"
)

type item struct {
	RequestID   string            `json:"requestId"`
	TargetWidth int               `json:"targetWidth"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Priority    string            `json:"priority,omitempty" strictjson:"nonempty"`
}

type request struct {
	RequestID   string            `json:"requestId"`
	TargetWidth int               `json:"targetWidth"`
	Small       int8              `json:"small,omitzero"`
	Count       uint32            `json:"count,omitzero"`
	Score       float64           `json:"score,omitzero"`
	Done        *bool             `json:"done,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Items       []item            `json:"items,omitempty"`
	Priority    string            `json:"priority,omitempty" strictjson:"nonempty"`
}

func TestUnmarshal(t *testing.T) {
	yes := true
	tests := []struct {
		name   string
		in     string
		want   request // when err is nil
		kind   Kind
		field  string
		reason string // the whole Error() when set
	}{
		{name: "ok", in: ` {"requestId":"r1","targetWidth":800,"metadata":{"a":"b"},"items":[{"requestId":"i1"}]} `,
			want: request{RequestID: "r1", TargetWidth: 800, Metadata: map[string]string{"a": "b"}, Items: []item{{RequestID: "i1"}}}},
		{name: "omitted optional fields", in: `{"requestId":"r1","done":true}`, want: request{RequestID: "r1", Done: &yes}},
		{name: "null string", in: `{"requestId":null}`, kind: Type, field: "requestId", reason: "requestId: must not be null (leave the field out instead)"},
		{name: "null int", in: `{"targetWidth":null}`, kind: Type, field: "targetWidth"},
		{name: "null map", in: `{"metadata":null}`, kind: Type, field: "metadata"},
		{name: "null bool pointer", in: `{"done":null}`, kind: Type, field: "done"},
		{name: "null in item", in: `{"items":[{"requestId":null}]}`, kind: Type, field: "items[0].requestId"},
		{name: "null map value", in: `{"metadata":{"a":null}}`, kind: Type, field: "metadata.a"},
		{name: "top-level null", in: `null`, kind: Type, field: ""},
		{name: "empty nonempty field", in: `{"priority":""}`, kind: Type, field: "priority", reason: "priority: must not be empty (leave the field out instead)"},
		{name: "empty plain field", in: `{"requestId":""}`, want: request{}},
		{name: "nonempty field set", in: `{"priority":"urgent"}`, want: request{Priority: "urgent"}},
		{name: "negative int", in: `{"targetWidth":-5}`, want: request{TargetWidth: -5}},
		{name: "int64 bounds", in: `{"targetWidth":-9223372036854775808}`, want: request{TargetWidth: -9223372036854775808}},
		{name: "escaped name", in: `{"request\u0049d":"r1"}`, want: request{RequestID: "r1"}},

		{name: "duplicate top", in: `{"requestId":"a","requestId":"b"}`, kind: DuplicateField, field: "requestId", reason: "requestId: duplicate field"},
		{name: "duplicate in item", in: `{"items":[{},{"targetWidth":1,"targetWidth":2}]}`, kind: DuplicateField, field: "items[1].targetWidth"},
		{name: "duplicate map key", in: `{"metadata":{"k":"1","k":"2"}}`, kind: DuplicateField, field: "metadata.k"},
		{name: "duplicate via escape", in: `{"requestId":"a","request\u0049d":"b"}`, kind: DuplicateField, field: "requestId"},

		{name: "wrong case hint", in: `{"TargetWidth":800}`, kind: UnknownField, field: "TargetWidth",
			reason: "TargetWidth: unknown field (field names are case-sensitive; did you mean targetWidth?)"},
		{name: "wrong case in item", in: `{"items":[{"requestid":"x"}]}`, kind: UnknownField, field: "items[0].requestid",
			reason: "items[0].requestid: unknown field (field names are case-sensitive; did you mean requestId?)"},
		{name: "unknown", in: `{"colour":"red"}`, kind: UnknownField, field: "colour", reason: "colour: unknown field"},
		{name: "unknown odd name", in: `{"a.b c":1}`, kind: UnknownField, field: `["a.b c"]`, reason: `["a.b c"]: unknown field`},
		{name: "unknown in item", in: `{"items":[{},{},{},{"colour":1}]}`, kind: UnknownField, field: "items[3].colour"},

		{name: "string for int", in: `{"targetWidth":"800"}`, kind: Type, field: "targetWidth", reason: "targetWidth: must be an integer, got a string"},
		{name: "number for string", in: `{"requestId":5}`, kind: Type, field: "requestId", reason: "requestId: must be a string, got a number"},
		{name: "array for object", in: `[1]`, kind: Type, field: "", reason: "must be an object, got an array"},
		{name: "string for object", in: `"x"`, kind: Type, reason: "must be an object, got a string"},
		{name: "object for array", in: `{"items":{}}`, kind: Type, field: "items", reason: "items: must be an array, got an object"},
		{name: "bool for pointer", in: `{"done":"yes"}`, kind: Type, reason: "done: must be a boolean, got a string"},
		{name: "map value type", in: `{"metadata":{"colour":7}}`, kind: Type, reason: "metadata.colour: must be a string, got a number"},
		{name: "map odd key", in: `{"metadata":{"a.b":7}}`, kind: Type, reason: `metadata["a.b"]: must be a string, got a number`},
		{name: "map numeric key", in: `{"metadata":{"3":7}}`, kind: Type, reason: `metadata.3: must be a string, got a number`},
		{name: "type in item", in: `{"items":[{},{},{},{"targetWidth":"wide"}]}`, kind: Type, reason: "items[3].targetWidth: must be an integer, got a string"},
		{name: "fraction", in: `{"targetWidth":1.5}`, kind: Type, reason: "targetWidth: must be an integer, got 1.5"},
		{name: "exponent", in: `{"targetWidth":1e3}`, kind: Type, reason: "targetWidth: must be an integer, got 1e3"},
		{name: "whole float", in: `{"targetWidth":800.0}`, kind: Type, reason: "targetWidth: must be an integer, got 800.0"},
		{name: "int overflow", in: `{"targetWidth":9223372036854775808}`, kind: Type, reason: "targetWidth: must be an integer between -2^63 and 2^63-1"},
		{name: "huge int", in: `{"targetWidth":123456789012345678901234567890}`, kind: Type, reason: "targetWidth: must be an integer between -2^63 and 2^63-1"},
		{name: "int8 overflow", in: `{"small":128}`, kind: Type, reason: "small: must be an integer between -128 and 127"},
		{name: "uint negative", in: `{"count":-1}`, kind: Type, reason: "count: must be a non-negative integer, got -1"},
		{name: "uint32 overflow", in: `{"count":4294967296}`, kind: Type, reason: "count: must be a non-negative integer between 0 and 2^32-1"},
		{name: "float overflow", in: `{"score":1e400}`, kind: Type, reason: "score: must be a number between about -1.8e308 and 1.8e308"},

		{name: "invalid utf8 value", in: "{\"requestId\":\"a\xffb\"}", kind: InvalidUTF8, field: "requestId", reason: "requestId: invalid UTF-8 in a string"},
		{name: "invalid utf8 in map", in: "{\"metadata\":{\"k\":\"\xc3\"}}", kind: InvalidUTF8, field: "metadata.k"},
		{name: "lone surrogate", in: `{"requestId":"\ud800"}`, kind: InvalidUTF8, reason: "requestId: invalid Unicode escape in a string (a lone surrogate)"},
		{name: "invalid utf8 name", in: "{\"items\":[{\"\xff\":1}]}", kind: InvalidUTF8, field: "items[0]"},

		{name: "second value", in: `{"requestId":"a"} {"requestId":"b"}`, kind: Trailing, reason: "unexpected data after the JSON value"},
		{name: "trailing garbage", in: `{"requestId":"a"}x`, kind: Trailing, reason: "unexpected data after the JSON value"},
		{name: "trailing brace", in: `{"requestId":"a"}}`, kind: Trailing},

		{name: "empty", in: ``, kind: Syntax, reason: "expected a JSON value, got an empty input"},
		{name: "whitespace only", in: " \n\t ", kind: Syntax, reason: "expected a JSON value, got an empty input"},
		{name: "malformed", in: `{"requestId": "a",,}`, kind: Syntax, reason: "malformed JSON at byte 18: invalid character ',' at start of string (expecting '\"')"},
		{name: "truncated", in: `{"requestId":"a"`, kind: Syntax, reason: "malformed JSON at byte 16: unexpected end of input"},
		{name: "single quotes", in: `{'requestId':1}`, kind: Syntax},
		{name: "non-string name", in: `{1:2}`, kind: Syntax},
		{name: "comment", in: `{} // x`, kind: Trailing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got request
			err := Unmarshal([]byte(tc.in), &got)
			if tc.kind == "" {
				if err != nil {
					t.Fatalf("Unmarshal: %v", err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("got %+v, want %+v", got, tc.want)
				}
				return
			}
			e := asError(t, err)
			if e.Kind != tc.kind {
				t.Errorf("Kind = %q, want %q (%v)", e.Kind, tc.kind, err)
			}
			if tc.field != "" && e.Field != tc.field {
				t.Errorf("Field = %q, want %q", e.Field, tc.field)
			}
			if tc.reason != "" && err.Error() != tc.reason {
				t.Errorf("Error() = %q, want %q", err.Error(), tc.reason)
			}
			noGoNames(t, err)

			// Decode over a reader gives the same answer.
			var again request
			if err2 := Decode(strings.NewReader(tc.in), &again); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("Decode: %v, Unmarshal: %v", err2, err)
			}
		})
	}
}

func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
	return e
}

// noGoNames checks that a message speaks JSON, not Go.
// noGoNames checks that a message shows nothing of the Go side. Its Reason
// is the library's own words and must hold none; its Field echoes the
// client's names, so it may hold one only where the input did (a field
// named "request{" is the client's, not a Go type's).
func noGoNames(t *testing.T, err error, input ...[]byte) {
	t.Helper()
	reason, field := err.Error(), ""
	var e *Error
	if errors.As(err, &e) {
		reason, field = e.Reason, e.Field
	}
	for _, bad := range []string{"Go ", "json:", "jsontext", "strictjson", "struct", "int64", "float64", "map[", "request{", "unmarshal"} {
		if strings.Contains(reason, bad) {
			t.Errorf("message %q names %q", err.Error(), bad)
		}
		if strings.Contains(field, bad) && (len(input) == 0 || !bytes.Contains(input[0], []byte(bad))) {
			t.Errorf("message %q names %q, which the input does not", err.Error(), bad)
		}
	}
}

func TestErrorString(t *testing.T) {
	if got := (&Error{Field: "a", Reason: "b"}).Error(); got != "a: b" {
		t.Errorf("got %q", got)
	}
	if got := (&Error{Reason: "b"}).Error(); got != "b" {
		t.Errorf("got %q", got)
	}
}

func TestNotAPointer(t *testing.T) {
	var r request
	err := Unmarshal([]byte(`{}`), r)
	var e *Error
	if err == nil || errors.As(err, &e) {
		t.Fatalf("want a programmer error, not a *Error: %v", err)
	}
}

// failingReader returns some JSON and then an error.
type failingReader struct {
	data string
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.data == "" {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestReaderErrorPassesThrough(t *testing.T) {
	boom := errors.New("connection reset")
	for _, data := range []string{``, `{"requestId":`, `{"requestId":"a"}`, `{"requestId":"a"}   `} {
		var r request
		err := Decode(&failingReader{data: data, err: boom}, &r)
		if !errors.Is(err, boom) {
			t.Errorf("%q: got %v, want the reader's error", data, err)
		}
		var e *Error
		if errors.As(err, &e) {
			t.Errorf("%q: reader error turned into *Error %v", data, e)
		}
	}
}

func TestMaxBytesReader(t *testing.T) {
	body := `{"requestId":"` + strings.Repeat("x", 100) + `"}`
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	rec := httptest.NewRecorder()
	var r request
	err := Decode(http.MaxBytesReader(rec, req.Body, 50), &r)
	var tooBig *http.MaxBytesError
	if !errors.As(err, &tooBig) || tooBig.Limit != 50 {
		t.Fatalf("got %v, want *http.MaxBytesError", err)
	}
}

// decodeBatch streams {"batchId":…,"items":[…]}, recording each item's
// error and going on, as the bulk endpoint does.
func decodeBatch(r io.Reader) (batchID string, items map[int]item, itemErrs map[int]error, err error) {
	d := NewDecoder(r)
	items, itemErrs = map[int]item{}, map[int]error{}
	err = d.Object(func(name string) error {
		switch name {
		case "batchId":
			return d.Value(&batchID)
		case "items":
			return d.Array(func(i int) error {
				var it item
				if err := d.Value(&it); err != nil {
					var e *Error
					if errors.As(err, &e) && e.Kind != Syntax {
						itemErrs[i] = err
						return nil
					}
					return err
				}
				items[i] = it
				return nil
			})
		}
		return d.UnknownField("batchId", "items")
	})
	if err == nil {
		err = d.End()
	}
	return batchID, items, itemErrs, err
}

func TestStreamBatch(t *testing.T) {
	in := `{"batchId":"b1","items":[
		{"requestId":"r0","targetWidth":100},
		{"requestId":"r1","targetWidth":"wide","metadata":{"k":"v"}},
		{"requestId":"r2","targetWidth":300}
	]}`
	id, items, itemErrs, err := decodeBatch(strings.NewReader(in))
	if err != nil {
		t.Fatalf("batch: %v", err)
	}
	if id != "b1" {
		t.Errorf("batchId = %q", id)
	}
	want := map[int]item{0: {RequestID: "r0", TargetWidth: 100}, 2: {RequestID: "r2", TargetWidth: 300}}
	if !reflect.DeepEqual(items, want) {
		t.Errorf("items = %+v, want %+v", items, want)
	}
	if len(itemErrs) != 1 || itemErrs[1] == nil {
		t.Fatalf("item errors = %v", itemErrs)
	}
	e := asError(t, itemErrs[1])
	if e.Kind != Type || e.Error() != "items[1].targetWidth: must be an integer, got a string" {
		t.Errorf("item 1: %v (%s)", e, e.Kind)
	}
}

func TestStreamItemFaults(t *testing.T) {
	// Each recoverable fault in item 1 is reported with its path, and item 2
	// is still decoded.
	tests := []struct {
		item, want string
		kind       Kind
	}{
		{`{"requestId":"a","requestId":"b"}`, "items[1].requestId: duplicate field", DuplicateField},
		{`{"colour":"red"}`, "items[1].colour: unknown field", UnknownField},
		{"{\"requestId\":\"\xff\"}", "items[1].requestId: invalid UTF-8 in a string", InvalidUTF8},
		{`[1,2]`, "items[1]: must be an object, got an array", Type},
		{`{"metadata":{"a":{"deep":[1]}}}`, "items[1].metadata.a: must be a string, got an object", Type},
	}
	for _, tc := range tests {
		in := `{"items":[{"requestId":"r0"},` + tc.item + `,{"requestId":"r2"}],"batchId":"b"}`
		id, items, itemErrs, err := decodeBatch(strings.NewReader(in))
		if err != nil {
			t.Fatalf("%s: batch: %v", tc.item, err)
		}
		if id != "b" || items[0].RequestID != "r0" || items[2].RequestID != "r2" || len(items) != 2 {
			t.Errorf("%s: id %q items %+v", tc.item, id, items)
		}
		e := asError(t, itemErrs[1])
		if e.Kind != tc.kind || e.Error() != tc.want {
			t.Errorf("%s: got %v (%s), want %v (%s)", tc.item, e, e.Kind, tc.want, tc.kind)
		}
	}
}

func TestStreamSyntaxStops(t *testing.T) {
	in := `{"batchId":"b1","items":[{"requestId":"r0"},{"requestId":"r1",,},{"requestId":"r2"}]}`
	d := NewDecoder(strings.NewReader(in))
	var seen []string
	err := d.Object(func(name string) error {
		if name != "items" {
			return d.Skip()
		}
		return d.Array(func(i int) error {
			var it item
			if err := d.Value(&it); err != nil {
				return err
			}
			seen = append(seen, it.RequestID)
			return nil
		})
	})
	e := asError(t, err)
	if e.Kind != Syntax || e.Field != "" || !strings.HasPrefix(e.Reason, "malformed JSON at byte 62: ") {
		t.Errorf("got %v (%s)", err, e.Kind)
	}
	if !reflect.DeepEqual(seen, []string{"r0"}) {
		t.Errorf("seen %v", seen)
	}
	// The Decoder has stopped: every later call gives the same error.
	if err2 := d.End(); err2 != err {
		t.Errorf("End after syntax error: %v", err2)
	}
	if err2 := d.Value(new(item)); err2 != err {
		t.Errorf("Value after syntax error: %v", err2)
	}
}

func TestStreamObjectFaults(t *testing.T) {
	tests := []struct {
		in, want string
		kind     Kind
	}{
		{`{"batchId":"a","batchId":"b"}`, "batchId: duplicate field", DuplicateField},
		{`{"BatchId":"a"}`, "BatchId: unknown field (field names are case-sensitive; did you mean batchId?)", UnknownField},
		{`{"items":{"a":1}}`, "items: must be an array, got an object", Type},
		{`{"batchId":7}`, "batchId: must be a string, got a number", Type},
		{"{\"\xff\":1}", "invalid UTF-8 in a field name", InvalidUTF8},
		{`["batchId"]`, "must be an object, got an array", Type},
		{`{"batchId":"a"} []`, "unexpected data after the JSON value", Trailing},
		{`{"batchId":"a"`, "malformed JSON at byte 14: unexpected end of input", Syntax},
		{``, "expected a JSON value, got an empty input", Syntax},
	}
	for _, tc := range tests {
		_, _, _, err := decodeBatch(strings.NewReader(tc.in))
		e := asError(t, err)
		if e.Kind != tc.kind || err.Error() != tc.want {
			t.Errorf("%s: got %q (%s), want %q (%s)", tc.in, err, e.Kind, tc.want, tc.kind)
		}
	}
}

func TestStreamNullIsRefused(t *testing.T) {
	for in, field := range map[string]string{
		`{"batchId":null,"items":[]}`: "batchId",
		`{"items":null}`:              "items",
	} {
		_, _, _, err := decodeBatch(strings.NewReader(in))
		e := asError(t, err)
		if e.Kind != Type || e.Field != field {
			t.Errorf("%s: got %v (%s), want a Type error on %s", in, err, e.Kind, field)
		}
	}
	_, _, itemErrs, err := decodeBatch(strings.NewReader(`{"items":[{"priority":""},{"requestId":"ok"}]}`))
	if err != nil || itemErrs[0] == nil || itemErrs[1] != nil {
		t.Fatalf("an empty nonempty field refuses its item alone: got %v %v", itemErrs, err)
	}
}

func TestStreamRecoverableErrorFromCallback(t *testing.T) {
	// A Type error from an item's own field leaves the item, the array and
	// the object read to their ends, so the next top-level value is reachable.
	d := NewDecoder(strings.NewReader(`{"items":[{"targetWidth":"x","requestId":"a"},{"requestId":"b"}],"batchId":"z"} {"batchId":"next"}`))
	err := d.Object(func(name string) error {
		if name != "items" {
			return d.UnknownField()
		}
		return d.Array(func(int) error { return d.Value(new(item)) })
	})
	if e := asError(t, err); e.Kind != Type || e.Field != "items[0].targetWidth" {
		t.Fatalf("got %v", err)
	}
	var next struct {
		BatchID string `json:"batchId"`
	}
	if err := d.Value(&next); err != nil || next.BatchID != "next" {
		t.Fatalf("next value: %v %+v", err, next)
	}
	if err := d.End(); err != nil {
		t.Fatalf("End: %v", err)
	}
}

var errApp = errors.New("too many items")

func TestStreamCallbackErrorUnchanged(t *testing.T) {
	d := NewDecoder(strings.NewReader(`{"items":[1,2,3]}`))
	err := d.Object(func(string) error {
		return d.Array(func(i int) error {
			if i == 1 {
				return errApp
			}
			return d.Skip()
		})
	})
	if err != errApp {
		t.Fatalf("got %v, want the callback's error itself", err)
	}
	// The stream is inside the array, so the Decoder has stopped.
	if err := d.End(); err != errApp {
		t.Fatalf("End: %v", err)
	}

	wrapped := fmt.Errorf("item: %w", errApp)
	d = NewDecoder(strings.NewReader(`{"a":1}`))
	err = d.Object(func(string) error { return wrapped })
	if err != wrapped || !errors.Is(err, errApp) {
		t.Fatalf("got %v", err)
	}
}

func TestStreamMisuse(t *testing.T) {
	// A callback must call exactly one value method.
	d := NewDecoder(strings.NewReader(`{"a":1,"b":2}`))
	err := d.Object(func(string) error { return nil })
	var e *Error
	if err == nil || errors.As(err, &e) {
		t.Fatalf("no value read: got %v", err)
	}
	d = NewDecoder(strings.NewReader(`{"a":1,"b":2}`))
	err = d.Object(func(string) error {
		var n int
		if err := d.Value(&n); err != nil {
			return err
		}
		return d.Value(&n)
	})
	if err == nil || errors.As(err, &e) {
		t.Fatalf("two values read: got %v", err)
	}
}

func TestStreamSkipChecks(t *testing.T) {
	d := NewDecoder(strings.NewReader(`{"x":{"a":[{"b":1,"b":2}]}}`))
	err := d.Object(func(string) error { return d.Skip() })
	if e := asError(t, err); e.Kind != DuplicateField || e.Field != "x.a[0].b" {
		t.Fatalf("got %v", err)
	}
	if err := d.End(); err != nil {
		t.Fatalf("End after a recoverable error: %v", err)
	}
}

func TestStreamTopLevelValues(t *testing.T) {
	d := NewDecoder(strings.NewReader(`{"requestId":"a"} {"requestId":"b"}`))
	var a, b item
	if err := d.Value(&a); err != nil {
		t.Fatal(err)
	}
	if err := d.Value(&b); err != nil {
		t.Fatal(err)
	}
	if a.RequestID != "a" || b.RequestID != "b" {
		t.Fatalf("%+v %+v", a, b)
	}
	if err := d.End(); err != nil {
		t.Fatal(err)
	}
	if err := d.Value(&a); asError(t, err).Reason != "expected a JSON value, got the end of the input" {
		t.Fatalf("got %v", err)
	}
}

// A type whose UnmarshalJSON uses strictjson has its errors placed inside
// the outer path.
type nested struct{ Inner item }

func (n *nested) UnmarshalJSON(b []byte) error { return Unmarshal(b, &n.Inner) }

func TestNestedStrictUnmarshaler(t *testing.T) {
	var v struct {
		N []nested `json:"n"`
	}
	err := Unmarshal([]byte(`{"n":[{},{"targetWidth":"x"}]}`), &v)
	if e := asError(t, err); e.Kind != Type || e.Error() != "n[1].targetWidth: must be an integer, got a string" {
		t.Fatalf("got %v", err)
	}
}

func TestLongNameIsCut(t *testing.T) {
	long := strings.Repeat("é", 200)
	err := Unmarshal([]byte(`{"`+long+`":1}`), new(request))
	e := asError(t, err)
	if len(e.Field) > 100 || !strings.HasSuffix(e.Field, `…"]`) {
		t.Fatalf("field %q", e.Field)
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{
		`{"requestId":"r1","targetWidth":800,"metadata":{"a":"b"},"items":[{"requestId":"i1","targetWidth":-1}]}`,
		`{"requestId":"a","requestId":"b"}`,
		`{"TargetWidth":1}`,
		`{"targetWidth":1e3}`,
		`{"score":1.5,"count":3,"small":-7,"done":false}`,
		"{\"requestId\":\"\xff\"}",
		`{"requestId":"\ud83d\ude00"}`,
		`null`, ``, `{} {}`, `[]`,
		`{"batchId":"b","items":[{"requestId":"r0"},{"targetWidth":"x"},[],{"colour":1}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// The streaming path must not panic, and fails only with *Error.
		if _, _, _, err := decodeBatch(bytes.NewReader(b)); err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("stream: error %v (%T) is not a *Error", err, err)
			}
			noGoNames(t, err, b)
		}

		var v request
		err := Unmarshal(b, &v)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not a *Error", err, err)
			}
			noGoNames(t, err, b)
			// Decode agrees with Unmarshal.
			if err2 := Decode(bytes.NewReader(b), new(request)); err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("Decode: %v, Unmarshal: %v", err2, err)
			}
			return
		}
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		var w request
		if err := Unmarshal(out, &w); err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		if !reflect.DeepEqual(normalize(v), normalize(w)) {
			t.Fatalf("round trip changed the value:\n%+v\n%+v", v, w)
		}
	})
}

// normalize treats empty and nil maps and slices alike, as omitempty does.
func normalize(r request) request {
	if len(r.Metadata) == 0 {
		r.Metadata = nil
	}
	if len(r.Items) == 0 {
		r.Items = nil
	}
	for i := range r.Items {
		if len(r.Items[i].Metadata) == 0 {
			r.Items[i].Metadata = nil
		}
	}
	return r
}

func TestHintFollowsTags(t *testing.T) {
	type Base struct {
		RequestID string `json:"requestId"`
	}
	var v struct {
		Base
		Ignored string `json:"-"`
		Plain   int
	}
	tests := map[string]string{
		`{"REQUESTID":"a"}`: "REQUESTID: unknown field (field names are case-sensitive; did you mean requestId?)",
		`{"plain":1}`:       "plain: unknown field (field names are case-sensitive; did you mean Plain?)",
		`{"ignored":"x"}`:   "ignored: unknown field",
		`{"Base":{}}`:       "Base: unknown field",
	}
	for in, want := range tests {
		if err := Unmarshal([]byte(in), &v); err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %q", in, err, want)
		}
	}
}

func TestLongNumberIsCut(t *testing.T) {
	err := Unmarshal([]byte(`{"targetWidth":1.000000000000000000000000000000000000000000000001}`), new(request))
	if err == nil || err.Error() != "targetWidth: must be an integer, got 1.00000000000000000000000000000000000000…" {
		t.Fatalf("got %v", err)
	}
}

func TestTooDeep(t *testing.T) {
	in := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	e := asError(t, Unmarshal([]byte(in), new(any)))
	if e.Kind != Syntax || !strings.HasSuffix(e.Reason, ": nested too deeply") {
		t.Fatalf("got %v", e)
	}
}
