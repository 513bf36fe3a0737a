// Package strictjson is the one JSON decoder for everything cropq is sent:
// HTTP API bodies, JSONL bulk files, task payloads and webhook bodies.
//
// encoding/json is lenient where a request must not be: it keeps the last of
// duplicate names (so two parts of a pipeline can see different values),
// matches names case-insensitively, ignores data after the first value,
// replaces invalid UTF-8, and its errors name Go types. This package decodes
// with github.com/go-json-experiment/json (the encoding/json/v2 prototype,
// which reads the same `json:"name,omitempty"` / `omitzero` tags) and rejects:
//
//   - members no struct field takes (UnknownField), with a hint when only the
//     case differs;
//   - duplicate names in any object (DuplicateField);
//   - invalid UTF-8, raw or as a lone surrogate escape (InvalidUTF8);
//   - anything but whitespace after the value (Trailing);
//   - a value of the wrong JSON type, and numbers a Go field cannot hold (Type).
//
// Decisions, so that every entry point behaves the same:
//
//   - null is never a value: a member that is null is refused (Type, "got
//     null"), so that "absent" has one spelling, leaving the member out. No
//     member of anything cropq is sent is nullable (the OpenAPI document
//     says so). Required fields are the caller's validation.
//   - A string field tagged `strictjson:"nonempty"` refuses "" (Type, "must
//     not be empty"): where the schema has an enum or a minLength, "" is not
//     another spelling of absent either.
//   - An integer field takes only an integer literal in range: 1.5, 1e3 and
//     800.0 are refused, although 1e3 and 800.0 are whole, because a sender
//     writing them is computing with floats and would be silently truncated
//     elsewhere. Out-of-range integers and float overflow are refused, never
//     clamped. Numbers are never taken from strings ("800" for an int is a
//     Type error) unless the field has the `string` tag option.
//   - A number decoded into an interface (map[string]any, any) becomes a
//     float64, so integers beyond 2^53 lose precision there; use typed fields.
//   - []byte and [N]byte fields take base64 strings (encoding/json wanted an
//     array of numbers for [N]byte).
//   - An empty input (or only whitespace) is a Syntax error.
//   - On error the target may be partly filled; callers must discard it.
//
// Every error that the JSON text causes is an *Error, whose message is meant
// for the person who sent the JSON. An error from the reader (for example
// *http.MaxBytesError) is returned as the reader returned it, so that
// errors.As finds it and a caller can answer 413 rather than 400.
package strictjson

import (
	"bytes"
	"cmp"
	"encoding"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Kind classifies an *Error, so callers branch on it rather than on text.
type Kind string

const (
	// Syntax: the input is not JSON (including an empty input and an input
	// cut short). Decoding cannot go on after it.
	Syntax Kind = "syntax"
	// Type: a value has the wrong JSON type, or a number does not fit.
	Type Kind = "type"
	// UnknownField: an object member that nothing takes.
	UnknownField Kind = "unknown-field"
	// DuplicateField: an object has the same member name twice.
	DuplicateField Kind = "duplicate-field"
	// InvalidUTF8: a string or member name is not valid UTF-8.
	InvalidUTF8 Kind = "invalid-utf8"
	// Trailing: something other than whitespace follows the JSON value.
	Trailing Kind = "trailing"
)

// Error is a fault in the JSON text.
type Error struct {
	Kind Kind
	// Field is the path of the member at fault from the top of the input,
	// as in "targetWidth", "items[3].targetWidth" or "metadata.colour";
	// names that are not plain words are quoted: `metadata["a.b"]`. It is ""
	// when no member is at fault (the whole value, malformed JSON, trailing
	// data). Malformed JSON is located by byte offset in Reason instead,
	// because a broken document has no reliable path.
	Field string
	// Reason says what is wrong, for a person who sends JSON; it never names
	// Go types or packages. Byte offsets in it count from 0.
	Reason string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// recoverable reports whether err is a fault in a value that the Decoder
// has fully consumed, so that decoding may go on after it.
func recoverable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Kind {
	case Type, UnknownField, DuplicateField, InvalidUTF8:
		return true
	}
	return false
}

// Unmarshal decodes b, which must hold exactly one JSON value with optional
// whitespace around it, into v, a non-nil pointer.
func Unmarshal(b []byte, v any) error {
	// A *bytes.Buffer lets jsontext parse b in place, without a copy.
	d := newDecoder(bytes.NewBuffer(b), nil)
	if err := d.Value(v); err != nil {
		return err
	}
	return d.End()
}

// Decode is Unmarshal over a reader: it reads r to EOF.
func Decode(r io.Reader, v any) error {
	d := NewDecoder(r)
	if err := d.Value(v); err != nil {
		return err
	}
	return d.End()
}

// Decoder reads JSON from a stream piece by piece, so that a large body (a
// batch of items) is decoded one item at a time instead of holding the raw
// body and its decoded copy at once.
//
// The value methods are Object, Array, Value, Skip and UnknownField. Inside
// an Object or Array callback exactly one of them must be called, for the
// member or element at hand. At the top level they may be called repeatedly
// to read consecutive values; End then checks that nothing else follows.
//
// When a value method returns an *Error whose Kind is not Syntax or
// Trailing, the value it was given has been read to its end, so decoding
// can go on: a batch can record a bad item and continue with the next one.
// After any other error (Syntax, Trailing, the reader's error, or a non-*Error
// returned by a callback) the Decoder stops and every later call returns
// that same error.
type Decoder struct {
	dec  *jsontext.Decoder
	src  *sourceReader // nil when parsing an in-memory buffer
	path []segment     // the members and elements being decoded
	err  error         // sticky: set once decoding cannot go on
	tops int           // top-level values begun, to tell an empty input
}

// segment is one step of the path: an object member or an array element.
type segment struct {
	name     string
	index    int  // -1 for an object member
	consumed bool // a value method has been called for it
}

// The stream reader checks only the grammar. Duplicate names and invalid
// UTF-8 are checked per value instead (by the strict re-parse in Value and
// Skip, and by Object for names), because a fault found by the stream reader
// is fatal to it, while one found after reading the whole value lets a batch
// report that item and go on.
var streamOptions = json.JoinOptions(
	jsontext.AllowDuplicateNames(true),
	jsontext.AllowInvalidUTF8(true),
)

// The options of the re-parse that decides what a value means. Defaults are
// spelled out so that a change of defaults upstream cannot weaken them.
var valueOptions = json.JoinOptions(
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false),
	json.RejectUnknownMembers(true),
	json.MatchCaseInsensitiveNames(false),
	json.WithUnmarshalers(json.UnmarshalFromFunc(refuseNull)),
)

// errNull is refuseNull's error, turned into a Type error by valueError.
var errNull = errors.New("null")

// refuseNull is called for every value: null is refused, anything else is
// decoded as usual.
func refuseNull(dec *jsontext.Decoder, _ any) error {
	if dec.PeekKind() == 'n' {
		return errNull
	}
	return json.SkipFunc
}

// NewDecoder returns a Decoder reading from r.
func NewDecoder(r io.Reader) *Decoder {
	src := &sourceReader{r: r}
	return newDecoder(src, src)
}

func newDecoder(r io.Reader, src *sourceReader) *Decoder {
	return &Decoder{dec: jsontext.NewDecoder(r, streamOptions), src: src}
}

// sourceReader keeps the reader's first error: jsontext wraps it in a type
// whose message names jsontext, and the caller needs the original back.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// Value decodes the next JSON value into v, a non-nil pointer, with the
// rules of Unmarshal. An error's Field is the full path from the top of the
// input. Type, UnknownField, DuplicateField and InvalidUTF8 errors leave the
// Decoder after the value, ready for the next one.
func (d *Decoder) Value(v any) error {
	if rv := reflect.ValueOf(v); rv.Kind() != reflect.Pointer || rv.IsNil() {
		return d.stop(fmt.Errorf("strictjson: Value needs a non-nil pointer, got %T", v))
	}
	if err := d.begin(); err != nil {
		return err
	}
	// Reading the whole value first means a type error in it still leaves
	// the stream at its end; only this value is held, not the whole body.
	raw, err := d.dec.ReadValue()
	if err != nil {
		return d.fatal(err)
	}
	if err := json.Unmarshal(raw, v, valueOptions); err != nil {
		return d.valueError(raw, err)
	}
	if name := emptyMember(raw, reflect.TypeOf(v).Elem()); name != "" {
		return &Error{Kind: Type, Field: formatPath(append(d.pathCopy(), segment{name: name, index: -1})),
			Reason: "must not be empty (leave the field out instead)"}
	}
	return nil
}

// emptyMember names the first member of raw, an object decoded into a
// struct of type t, that is "" although its field is tagged
// `strictjson:"nonempty"`; "" when there is none. Only the value's own
// members are looked at, with those of a struct it inlines explicitly
// (`json:",inline"`, as tasks.Request its Params): that is where entrances
// put such fields. A struct merely embedded (a crop payload's request) is
// not looked into.
func emptyMember(raw []byte, t reflect.Type) string {
	if t.Kind() != reflect.Struct {
		return ""
	}
	names := nonEmptyNames(t, nil)
	if len(names) == 0 || !bytes.Contains(raw, []byte(`""`)) {
		return ""
	}
	// A *bytes.Buffer is parsed in place: a 32 MiB image is not copied.
	dec := jsontext.NewDecoder(bytes.NewBuffer(raw))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return ""
	}
	for dec.PeekKind() == '"' {
		tok, err := dec.ReadToken()
		if err != nil {
			return ""
		}
		name := tok.String()
		val, err := dec.ReadValue()
		if err != nil {
			return ""
		}
		if string(val) == `""` && slices.Contains(names, name) {
			return name
		}
	}
	return ""
}

// Skip reads past the next value, still refusing duplicate names and
// invalid UTF-8 inside it.
func (d *Decoder) Skip() error {
	if err := d.begin(); err != nil {
		return err
	}
	raw, err := d.dec.ReadValue()
	if err != nil {
		return d.fatal(err)
	}
	if _, err := jsontext.NewDecoder(bytes.NewReader(raw), valueOptions).ReadValue(); err != nil {
		return d.valueError(raw, err)
	}
	return nil
}

// UnknownField, called from an Object callback, reads past the member's
// value and returns the UnknownField error for it. known lists the names the
// callback takes, for the case-insensitive hint.
func (d *Decoder) UnknownField(known ...string) error {
	if n := len(d.path); n == 0 || d.path[n-1].index >= 0 {
		return d.stop(errors.New("strictjson: UnknownField called outside an Object callback"))
	}
	name := d.path[len(d.path)-1].name
	if err := d.begin(); err != nil {
		return err
	}
	if err := d.dec.SkipValue(); err != nil {
		return d.fatal(err)
	}
	return &Error{Kind: UnknownField, Field: formatPath(d.path), Reason: unknownReason(name, known)}
}

// Object reads a JSON object, calling fn with each member name in order; fn
// must decode or skip the member's value with exactly one value method.
// Duplicate names and invalid UTF-8 in names are refused. An error returned
// by fn comes back unchanged. If it is a recoverable *Error (see Decoder),
// Object first reads the rest of the object, so decoding can go on;
// otherwise the Decoder stops.
func (d *Decoder) Object(fn func(name string) error) error {
	if open, err := d.open('{', "an object"); !open {
		return err
	}
	var seen map[string]struct{}
	for {
		k, err := d.peek()
		if err != nil {
			return err
		}
		if k == '}' {
			break
		}
		// ReadValue gives the name's exact bytes, which the stream reader
		// did not check for UTF-8.
		quoted, err := d.dec.ReadValue()
		if err != nil {
			return d.fatal(err)
		}
		validUTF8 := jsontext.Value(quoted).IsValid()
		unquoted, _ := jsontext.AppendUnquote(nil, quoted)
		name := string(unquoted)
		_, dup := seen[name]
		if seen == nil {
			seen = make(map[string]struct{})
		}
		seen[name] = struct{}{}

		d.path = append(d.path, segment{name: name, index: -1})
		switch {
		case !validUTF8:
			// The object is at fault: the name cannot be echoed faithfully.
			err = &Error{Kind: InvalidUTF8, Field: formatPath(d.path[:len(d.path)-1]), Reason: "invalid UTF-8 in a field name"}
		case dup:
			err = &Error{Kind: DuplicateField, Field: formatPath(d.path), Reason: "duplicate field"}
		default:
			err = fn(name)
		}
		if err := d.endMember(err, "Object"); err != nil {
			return err
		}
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return d.fatal(err)
	}
	return nil
}

// Array reads a JSON array, calling fn with each element's index; fn must
// decode or skip the element with exactly one value method. Errors from fn
// are handled as in Object.
func (d *Decoder) Array(fn func(i int) error) error {
	if open, err := d.open('[', "an array"); !open {
		return err
	}
	for i := 0; ; i++ {
		k, err := d.peek()
		if err != nil {
			return err
		}
		if k == ']' {
			break
		}
		d.path = append(d.path, segment{index: i})
		if err := d.endMember(fn(i), "Array"); err != nil {
			return err
		}
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return d.fatal(err)
	}
	return nil
}

// End checks that only whitespace follows the values read, reading to EOF.
func (d *Decoder) End() error {
	if d.err != nil {
		return d.err
	}
	if len(d.path) > 0 {
		return d.stop(errors.New("strictjson: End called inside an Object or Array callback"))
	}
	switch _, err := d.dec.ReadToken(); {
	case err == io.EOF:
		return nil
	case d.src != nil && d.src.err != nil:
		return d.stop(d.src.err)
	}
	return d.stop(&Error{Kind: Trailing, Reason: "unexpected data after the JSON value"})
}

// open claims the next value and reads its opening delimiter; open false
// means the value was not what was wanted (null included).
func (d *Decoder) open(delim jsontext.Kind, want string) (open bool, err error) {
	if err := d.begin(); err != nil {
		return false, err
	}
	switch k, err := d.peek(); {
	case err != nil:
		return false, err
	case k != delim:
		return false, d.mismatch(want, k)
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return false, d.fatal(err)
	}
	return true, nil
}

// begin claims the current member or element for one value method.
func (d *Decoder) begin() error {
	if d.err != nil {
		return d.err
	}
	if n := len(d.path); n > 0 {
		if d.path[n-1].consumed {
			return d.stop(errors.New("strictjson: a callback called more than one value method for " + quotePath(d.path)))
		}
		d.path[n-1].consumed = true
	} else {
		d.tops++
	}
	return nil
}

// endMember pops the member or element fn was called for and decides what
// fn's error means for the enclosing object or array.
func (d *Decoder) endMember(err error, in string) error {
	seg := d.path[len(d.path)-1]
	defer func() { d.path = d.path[:len(d.path)-1] }()
	switch {
	case d.err != nil:
		if err != nil {
			return err // fn's own error, unchanged, though the Decoder stopped
		}
		return d.err
	case err == nil:
		if !seg.consumed {
			return d.stop(fmt.Errorf("strictjson: %s callback for %s did not read its value", in, quotePath(d.path)))
		}
		return nil
	case !recoverable(err):
		d.err = err // the stream is somewhere inside the value
		return err
	}
	// A fault in this member: finish the enclosing value so the caller can
	// go on with the next one.
	if !seg.consumed {
		if serr := d.dec.SkipValue(); serr != nil {
			return d.fatal(serr)
		}
	}
	for depth := d.dec.StackDepth(); d.dec.StackDepth() >= depth; {
		if _, serr := d.dec.ReadToken(); serr != nil {
			return d.fatal(serr)
		}
	}
	return err
}

// peek returns the kind of the next token, or the error reading it.
func (d *Decoder) peek() (jsontext.Kind, error) {
	if k := d.dec.PeekKind(); k != 0 {
		return k, nil
	}
	_, err := d.dec.ReadValue() // returns the error PeekKind kept
	if err == nil {
		err = errors.New("unexpected token")
	}
	return 0, d.fatal(err)
}

// mismatch reads past a value of the wrong kind and reports it.
func (d *Decoder) mismatch(want string, got jsontext.Kind) error {
	if err := d.dec.SkipValue(); err != nil {
		return d.fatal(err)
	}
	return &Error{Kind: Type, Field: formatPath(d.path), Reason: "must be " + want + ", got " + kindName(got)}
}

func (d *Decoder) stop(err error) error {
	if d.err == nil {
		d.err = err
	}
	return err
}

// fatal turns an error of the stream reader into the reader's own error or
// a Syntax *Error, and stops the Decoder.
func (d *Decoder) fatal(err error) error {
	if d.src != nil && d.src.err != nil {
		return d.stop(d.src.err)
	}
	e := &Error{Kind: Syntax, Reason: "malformed JSON"}
	var serr *jsontext.SyntacticError
	switch {
	case err == io.EOF && d.tops <= 1:
		e.Reason = "expected a JSON value, got an empty input"
	case err == io.EOF:
		e.Reason = "expected a JSON value, got the end of the input"
	case errors.As(err, &serr):
		e.Reason = fmt.Sprintf("malformed JSON at byte %d: %s", serr.ByteOffset, syntaxDetail(serr.Err))
	}
	return d.stop(e)
}

// syntaxDetail is jsontext's description of a grammar fault, which speaks of
// JSON only, with its end-of-input and depth wording made plainer.
func syntaxDetail(err error) string {
	switch {
	case err == nil:
		return "invalid JSON"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	case err.Error() == "exceeded max depth":
		return "nested too deeply"
	}
	return err.Error()
}

// errInvalidUTF8 is the sentinel jsontext reports invalid UTF-8 with; it is
// not exported, so it is taken from a known failure.
var errInvalidUTF8 = func() error {
	_, err := jsontext.NewDecoder(strings.NewReader("\"\xff\"")).ReadValue()
	var serr *jsontext.SyntacticError
	if errors.As(err, &serr) {
		return serr.Err
	}
	return nil
}()

// valueError turns an error from decoding raw, the current value, into an
// *Error located from the top of the input.
func (d *Decoder) valueError(raw []byte, err error) error {
	var syn *jsontext.SyntacticError
	var sem *json.SemanticError
	e := &Error{Kind: Type, Reason: "invalid value"}
	switch {
	case errors.As(err, &syn):
		e.Field = formatPath(append(d.pathCopy(), walk(raw, syn.JSONPointer)...))
		switch {
		case errors.Is(syn.Err, jsontext.ErrDuplicateName):
			e.Kind, e.Reason = DuplicateField, "duplicate field"
		case errInvalidUTF8 != nil && errors.Is(syn.Err, errInvalidUTF8):
			e.Kind, e.Reason = InvalidUTF8, "invalid UTF-8 in a string"
		default:
			// raw passed the stream reader, which allows only duplicate
			// names and invalid Unicode more than this parse does; what is
			// left is an escaped lone surrogate such as "\ud800".
			e.Kind, e.Reason = InvalidUTF8, "invalid Unicode escape in a string (a lone surrogate)"
		}
	case errors.As(err, &sem):
		e.Field = formatPath(append(d.pathCopy(), walk(raw, sem.JSONPointer)...))
		var inner *Error
		switch {
		case errors.Is(sem.Err, json.ErrUnknownName):
			e.Kind = UnknownField
			name := sem.JSONPointer.LastToken()
			e.Reason = unknownReason(name, fieldNames(sem.GoType, name))
		case errors.Is(sem.Err, errNull):
			e.Reason = "must not be null (leave the field out instead)"
		case errors.As(sem.Err, &inner):
			// A type's UnmarshalJSON that itself used strictjson.
			e.Kind, e.Reason = inner.Kind, inner.Reason
			e.Field = joinPath(e.Field, inner.Field)
		default:
			e.Reason = typeReason(sem)
		}
	}
	return e
}

func (d *Decoder) pathCopy() []segment {
	return append([]segment(nil), d.path...)
}

// walk turns a JSON Pointer into path segments. A pointer token such as "3"
// may be an array index or a member name, so each step looks at the value.
func walk(raw []byte, ptr jsontext.Pointer) []segment {
	var segs []segment
	cur := raw
	for tok := range ptr.Tokens() {
		var seg segment
		cur, seg = step(cur, tok)
		segs = append(segs, seg)
	}
	return segs
}

// step finds the value that tok names inside v.
func step(v []byte, tok string) ([]byte, segment) {
	named := segment{name: tok, index: -1}
	if len(v) == 0 {
		return nil, named
	}
	dec := jsontext.NewDecoder(bytes.NewReader(v), streamOptions)
	switch dec.PeekKind() {
	case '[':
		i, err := strconv.Atoi(tok)
		if err != nil || i < 0 {
			return nil, named
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, segment{index: i}
		}
		for range i {
			if dec.SkipValue() != nil {
				return nil, segment{index: i}
			}
		}
		val, _ := dec.ReadValue()
		return val, segment{index: i}
	case '{':
		if _, err := dec.ReadToken(); err != nil {
			return nil, named
		}
		for dec.PeekKind() == '"' {
			name, err := dec.ReadToken()
			if err != nil {
				break
			}
			if name.String() == tok {
				val, _ := dec.ReadValue()
				return val, named
			}
			if dec.SkipValue() != nil {
				break
			}
		}
	}
	return nil, named
}

// formatPath writes segments as `items[3].targetWidth`; a name that is not
// a plain word is quoted, as in `metadata["a.b"]`, and a long one cut short.
func formatPath(segs []segment) string {
	var b strings.Builder
	for _, s := range segs {
		switch {
		case s.index >= 0:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.index))
			b.WriteByte(']')
		case plainName(s.name):
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s.name)
		default:
			name := s.name
			if len(name) > maxNameLen {
				cut := maxNameLen
				for cut > 0 && !utf8.RuneStart(name[cut]) {
					cut--
				}
				name = name[:cut] + "…"
			}
			q, _ := jsontext.AppendQuote(nil, name)
			b.WriteByte('[')
			b.Write(q)
			b.WriteByte(']')
		}
	}
	return b.String()
}

// maxNameLen bounds how much of a sender's member name is echoed back.
const maxNameLen = 64

func plainName(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for _, r := range s {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-' || r == '$') {
			return false
		}
	}
	return true
}

// quotePath names a path in a programmer-facing message.
func quotePath(segs []segment) string {
	if len(segs) == 0 {
		return "the top-level value"
	}
	return strconv.Quote(formatPath(segs))
}

// joinPath appends an inner error's Field to the outer one.
func joinPath(outer, inner string) string {
	switch {
	case outer == "":
		return inner
	case inner == "":
		return outer
	case strings.HasPrefix(inner, "["):
		return outer + inner
	}
	return outer + "." + inner
}

func unknownReason(name string, known []string) string {
	for _, k := range known {
		if k != name && strings.EqualFold(k, name) {
			return "unknown field (field names are case-sensitive; did you mean " + k + "?)"
		}
	}
	return "unknown field"
}

// fieldNames lists the names a struct type takes that match name but for
// case, each confirmed by decoding a one-member object, so that the hint
// never suggests a name the decoder would refuse.
func fieldNames(t reflect.Type, name string) []string {
	if t == nil {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for _, c := range structNames(t, map[reflect.Type]bool{}) {
		if c == name || !strings.EqualFold(c, name) {
			continue
		}
		q, err := jsontext.AppendQuote(nil, c)
		if err != nil {
			continue
		}
		probe := append(append([]byte("{"), q...), ":null}"...)
		if err := json.Unmarshal(probe, reflect.New(t).Interface(), valueOptions); !errors.Is(err, json.ErrUnknownName) {
			out = append(out, c)
		}
	}
	return out
}

// nonEmptyNames adds to names the JSON names of t's fields tagged
// `strictjson:"nonempty"`, and of those of the structs it inlines
// explicitly.
func nonEmptyNames(t reflect.Type, names []string) []string {
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case f.Tag.Get("strictjson") == "nonempty":
			names = append(names, cmp.Or(name, f.Name))
		case name == "" && strings.Contains(","+opts+",", ",inline,") && f.Type.Kind() == reflect.Struct:
			names = nonEmptyNames(f.Type, names)
		}
	}
	return names
}

// structNames lists the JSON names of t's fields, following the tag rules
// closely enough for a hint (fieldNames confirms each one).
func structNames(t reflect.Type, seen map[reflect.Type]bool) []string {
	if seen[t] {
		return nil
	}
	seen[t] = true
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, hasTag := f.Tag.Lookup("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		inline := strings.Contains(","+opts+",", ",inline,") || (f.Anonymous && name == "")
		if inline && ft.Kind() == reflect.Struct {
			out = append(out, structNames(ft, seen)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if !hasTag || name == "" {
			name = f.Name
		}
		out = append(out, strings.Trim(name, "'"))
	}
	return out
}

var (
	timeType            = reflect.TypeFor[time.Time]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	jsonUnmarshalerFrom = reflect.TypeFor[json.UnmarshalerFrom]()
)

// typeReason explains a value the target cannot hold.
func typeReason(sem *json.SemanticError) string {
	t := sem.GoType
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	want := describe(t)
	switch {
	case want == "":
		return "invalid value"
	case sem.Err == nil: // the JSON kind does not fit
		if got := kindName(sem.JSONKind); got != "" {
			return "must be " + want + ", got " + got
		}
		return "must be " + want
	case errors.Is(sem.Err, strconv.ErrRange):
		if r := rangeOf(t); r != "" {
			return "must be " + want + " between " + r
		}
	case errors.Is(sem.Err, strconv.ErrSyntax):
		if len(sem.JSONValue) > 0 {
			return "must be " + want + ", got " + snippet(sem.JSONValue)
		}
	}
	return "must be " + want
}

// describe names, in JSON terms, what a Go type takes; "" if unknown.
func describe(t reflect.Type) string {
	if t == nil {
		return ""
	}
	if t == timeType {
		return "a timestamp string (RFC 3339)"
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(jsonUnmarshalerType) || pt.Implements(jsonUnmarshalerFrom) {
		return ""
	}
	if pt.Implements(textUnmarshalerType) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	}
	return ""
}

// rangeOf gives the bounds of a numeric type.
func rangeOf(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		switch t.Bits() {
		case 8:
			return "-128 and 127"
		case 16:
			return "-32768 and 32767"
		}
		return fmt.Sprintf("-2^%d and 2^%d-1", t.Bits()-1, t.Bits()-1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		switch t.Bits() {
		case 8:
			return "0 and 255"
		case 16:
			return "0 and 65535"
		}
		return fmt.Sprintf("0 and 2^%d-1", t.Bits())
	case reflect.Float32:
		return "about -3.4e38 and 3.4e38"
	case reflect.Float64:
		return "about -1.8e308 and 1.8e308"
	}
	return ""
}

func kindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '{', '}':
		return "an object"
	case '[', ']':
		return "an array"
	}
	return ""
}

// snippet echoes a sender's number or string, cut short.
func snippet(v []byte) string {
	const max = 40
	if len(v) <= max {
		return string(v)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return string(v[:cut]) + "…"
}
