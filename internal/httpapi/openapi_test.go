package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/manifest"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// problemTypePrefix is the form of every problem type.
const problemTypePrefix = "https://cropq.dev/problems/"

// volatile are the members whose values differ from run to run (or are
// opaque digests, or prose): an actual response must have them, as non-empty
// strings, wherever the documented example has them, whatever their value.
var volatile = map[string]bool{"createdAt": true, "updatedAt": true, "at": true, "fingerprint": true, "detail": true}

// A report is NDJSON, whose schema is one line's: each line is decoded
// and checked against it, and the last one is handed on to be checked
// again (an empty report has nothing to check).
func init() {
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", func(body io.Reader, _ http.Header, schema *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		dec := json.NewDecoder(body)
		var last any
		for n := 1; dec.More(); n++ {
			var v any
			if err := dec.Decode(&v); err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			if err := schema.Value.VisitJSON(v); err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			last = v
		}
		if last == nil {
			return nil, errors.New("an empty report: no line to check")
		}
		return last, nil
	})
}

// loadDoc parses and validates an OpenAPI document. Examples are left out
// of Validate because some request examples are invalid on purpose (they
// show what the server refuses); checkExamples checks them all instead.
func loadDoc(t *testing.T, raw []byte) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	require.NoError(t, err)
	require.NoError(t, doc.Validate(context.Background(), openapi3.DisableExamplesValidation(), openapi3.EnableSchemaPatternValidation()))
	return doc
}

func readDoc(t *testing.T) ([]byte, *openapi3.T) {
	t.Helper()
	raw, err := os.ReadFile("openapi.json")
	require.NoError(t, err)
	return raw, loadDoc(t, raw)
}

// The document loads, is valid OpenAPI 3, and its examples say what its
// schemas say: every response example conforms to its schema, and every
// request example conforms exactly when its x-schema-valid says so.
func TestOpenAPIDocumentValid(t *testing.T) {
	raw, doc := readDoc(t)
	assert.True(t, strings.HasPrefix(doc.OpenAPI, "3."))

	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			for code, rr := range op.Responses.Map() {
				for mt, media := range rr.Value.Content {
					for name, ex := range media.Examples {
						if media.Schema == nil {
							continue
						}
						assert.NoError(t, media.Schema.Value.VisitJSON(ex.Value.Value), "%s response %s %s example %q", where, code, mt, name)
					}
				}
			}
		}
	}

	exs := requestExamples(t, raw, doc)
	require.NotEmpty(t, exs)
	for _, ex := range exs {
		var schema *openapi3.SchemaRef
		var value any
		switch {
		case ex.contentType != "application/json":
			continue // x-schema-valid is about the content type there; see TestOpenAPIExamples
		case ex.param != "":
			schema, value = ex.op.Parameters.GetByInAndName("path", ex.param).Schema, ex.paramValue
		default:
			schema = ex.op.RequestBody.Value.Content.Get("application/json").Schema
			require.NoError(t, json.Unmarshal(ex.body, &value))
		}
		err := schema.Value.VisitJSON(value)
		if ex.schemaValid {
			assert.NoError(t, err, "%s: x-schema-valid is true", ex)
		} else {
			assert.Error(t, err, "%s: x-schema-valid is false", ex)
		}
	}
}

// requestExample is one request example of the document, with what the
// server is expected to answer.
type requestExample struct {
	method, path, name string // path as documented: /v1/crops/{requestId}
	op                 *openapi3.Operation
	param, paramValue  string // the path parameter the example fills, if any
	body               []byte // the example value as written, if a body example
	contentType        string
	expectStatus       int
	expectField        string
	expectItems        []itemExpectation
	schemaValid        bool
}

type itemExpectation struct {
	Outcome string `json:"outcome"`
	Field   string `json:"field"`
}

func (e requestExample) String() string { return e.method + " " + e.path + " example " + e.name }

// url is the path the example is sent to.
func (e requestExample) url() string {
	if e.param == "" {
		return e.path
	}
	return strings.ReplaceAll(e.path, "{"+e.param+"}", e.paramValue)
}

// exampleObject is an OpenAPI Example object with cropq's extensions.
type exampleObject struct {
	Value        json.RawMessage   `json:"value"`
	ExpectStatus int               `json:"x-expect-status"`
	ExpectField  string            `json:"x-expect-field"`
	ExpectItems  []itemExpectation `json:"x-expect-items"`
	SchemaValid  *bool             `json:"x-schema-valid"`
	ContentType  string            `json:"x-content-type"`
}

// requestExamples lists the document's request examples (path parameter
// and request body examples) in the order the document gives them: paths,
// then operations, then parameters and the body, then examples. Order
// matters: "the same request again" follows "a request".
func requestExamples(t *testing.T, raw []byte, doc *openapi3.T) []requestExample {
	t.Helper()
	var out []requestExample
	add := func(base requestExample, examples json.RawMessage) {
		for _, m := range orderedMembers(t, examples) {
			var ex exampleObject
			require.NoError(t, json.Unmarshal(m.value, &ex), "%s example %s", base, m.name)
			e := base
			e.name = m.name
			require.NotZero(t, ex.ExpectStatus, "%s: x-expect-status is required", e)
			require.NotNil(t, ex.SchemaValid, "%s: x-schema-valid is required", e)
			e.expectStatus, e.expectField, e.expectItems, e.schemaValid = ex.ExpectStatus, ex.ExpectField, ex.ExpectItems, *ex.SchemaValid
			e.contentType = cmpOr(ex.ContentType, "application/json")
			if e.param != "" {
				require.NoError(t, json.Unmarshal(ex.Value, &e.paramValue), "%s: a path parameter example is a string", e)
			} else {
				var b bytes.Buffer
				require.NoError(t, json.Compact(&b, ex.Value))
				e.body = b.Bytes()
			}
			out = append(out, e)
		}
	}
	var top struct {
		Paths json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(raw, &top))
	for _, p := range orderedMembers(t, top.Paths) {
		for _, m := range orderedMembers(t, p.value) {
			if m.name == "parameters" || strings.HasPrefix(m.name, "x-") {
				continue
			}
			method := strings.ToUpper(m.name)
			op := doc.Paths.Value(p.name).GetOperation(method)
			require.NotNil(t, op, "%s %s", method, p.name)
			base := requestExample{method: method, path: p.name, op: op}
			var rawOp struct {
				Parameters []struct {
					Name     string          `json:"name"`
					Examples json.RawMessage `json:"examples"`
				} `json:"parameters"`
				RequestBody struct {
					Content map[string]struct {
						Examples json.RawMessage `json:"examples"`
					} `json:"content"`
				} `json:"requestBody"`
			}
			require.NoError(t, json.Unmarshal(m.value, &rawOp))
			for _, prm := range rawOp.Parameters {
				if prm.Examples != nil {
					pb := base
					pb.param = prm.Name
					add(pb, prm.Examples)
				}
			}
			if c, ok := rawOp.RequestBody.Content["application/json"]; ok && c.Examples != nil {
				add(base, c.Examples)
			}
		}
	}
	return out
}

type member struct {
	name  string
	value json.RawMessage
}

// orderedMembers lists the members of a JSON object in document order.
func orderedMembers(t *testing.T, obj json.RawMessage) []member {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(obj))
	tok, err := dec.Token()
	require.NoError(t, err)
	require.Equal(t, json.Delim('{'), tok)
	var out []member
	for dec.More() {
		tok, err := dec.Token()
		require.NoError(t, err)
		var v json.RawMessage
		require.NoError(t, dec.Decode(&v))
		out = append(out, member{tok.(string), v})
	}
	return out
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// validationOptions are the options of request and response validation:
// every status must be documented, and a request needs a bearer token.
func validationOptions() *openapi3filter.Options {
	return &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		AuthenticationFunc: func(_ context.Context, in *openapi3filter.AuthenticationInput) error {
			if !strings.HasPrefix(in.RequestValidationInput.Request.Header.Get("Authorization"), "Bearer ") {
				return in.NewError(errors.New("no bearer token"))
			}
			return nil
		},
	}
}

// requestInput is the validation input of a request to the documented
// operation method path (path as documented) with the given path parameters.
func requestInput(doc *openapi3.T, r *http.Request, method, path string, params map[string]string) *openapi3filter.RequestValidationInput {
	item := doc.Paths.Value(path)
	return &openapi3filter.RequestValidationInput{
		Request:    r,
		PathParams: params,
		Route:      &routers.Route{Spec: doc, Path: path, PathItem: item, Method: method, Operation: item.GetOperation(method)},
		Options:    validationOptions(),
	}
}

// validateResponse checks an actual response against the document.
func validateResponse(t *testing.T, in *openapi3filter.RequestValidationInput, resp *http.Response, body []byte, what string) {
	t.Helper()
	err := openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                in.Options,
	})
	assert.NoError(t, err, "%s: the response does not match the document:\n%s", what, body)
}

// Every request example of the document, in order, is sent to a running
// server (real Redis); the answer must have the documented status and
// field, match the response example of the same name, and conform to the
// document, as the request must exactly when x-schema-valid says so.
// newManifestServer is newServer with manifests read from a MinIO holding
// the objects the document's examples name: s3://catalogues/2024/june.jsonl
// and july.jsonl.
func newManifestServer(t *testing.T) *httptest.Server {
	t.Helper()
	m := testenv.MinIO(t)
	s3c := testenv.S3Client(m)
	ctx := context.Background()
	_, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("catalogues")})
	require.NoError(t, err)
	for key, body := range map[string]string{
		"2024/june.jsonl": `{"requestId":"june-1","imageUrl":"https://cdn.example.com/p/1.jpg","targetWidth":800,"targetHeight":800}` + "\n",
		"2024/july.jsonl": `{"requestId":"july-1","imageUrl":"https://cdn.example.com/p/1.jpg","targetWidth":800,"targetHeight":800}` + "\n",
	} {
		_, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("catalogues"), Key: aws.String(key), Body: strings.NewReader(body)})
		require.NoError(t, err)
	}
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	p := producer.New(rdb, producer.Config{Manifests: manifest.S3{Client: s3c}})
	t.Cleanup(func() { _ = p.Close() })
	api, err := httpapi.New(p, httpapi.Config{Tokens: []string{"other-token-0123456789", token}})
	require.NoError(t, err)
	hs := httptest.NewServer(api)
	t.Cleanup(hs.Close)
	return hs
}

func TestOpenAPIExamples(t *testing.T) {
	s := newManifestServer(t)
	resp, raw := call(t, s, "GET", "/openapi.json", nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	doc := loadDoc(t, raw)
	exs := requestExamples(t, raw, doc)

	// The examples the document must have are there.
	var names []string
	for _, ex := range exs {
		names = append(names, ex.method+" "+ex.path+" "+ex.name)
	}
	for _, want := range []string{"POST /v1/crops urlCrop", "POST /v1/crops urlCropAgain", "POST /v1/crops otherBucket",
		"POST /v1/crops bothSources", "POST /v1/crops badKeyTemplate", "POST /v1/crops wrongCaseField",
		"POST /v1/crops privateCallback", "POST /v1/crops/batch mixedBatch", "POST /v1/crops/batch invalidBatchId",
		"POST /v1/crops otherTenant", "POST /v1/crops badPriority", "POST /v1/crops badTenant", "POST /v1/crops/batch otherTenantItem",
		"POST /v1/batches manifestBatch", "POST /v1/batches manifestBatchAgain", "POST /v1/batches otherManifestSameBatch", "POST /v1/batches manifestMissing",
		"GET /v1/batches/{batchId}/report mixedBatch", "GET /v1/batches/{batchId}/report unknownBatch"} {
		assert.Contains(t, names, want)
	}

	for _, ex := range exs {
		t.Run(ex.method+" "+ex.path+" "+ex.name, func(t *testing.T) {
			// The request, against the document.
			var body io.Reader
			if ex.body != nil {
				body = bytes.NewReader(ex.body)
			}
			vr := httptest.NewRequest(ex.method, ex.url(), body)
			vr.Header.Set("Authorization", "Bearer "+token)
			if ex.body != nil {
				vr.Header.Set("Content-Type", ex.contentType)
			}
			var params map[string]string
			if ex.param != "" {
				params = map[string]string{ex.param: ex.paramValue}
			}
			in := requestInput(doc, vr, ex.method, ex.path, params)
			err := openapi3filter.ValidateRequest(context.Background(), in)
			if ex.schemaValid {
				assert.NoError(t, err, "x-schema-valid is true, but the document refuses the request")
			} else {
				assert.Error(t, err, "x-schema-valid is false, but the document accepts the request")
			}

			// The request, to the server.
			req, err := http.NewRequest(ex.method, s.URL+ex.url(), bytes.NewReader(ex.body))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+token)
			if ex.body != nil {
				req.Header.Set("Content-Type", ex.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)

			require.Equal(t, ex.expectStatus, resp.StatusCode, "x-expect-status; body:\n%s", got)
			if resp.StatusCode >= 400 {
				p := decodeProblem(t, resp, got)
				assert.True(t, strings.HasPrefix(p.Type, problemTypePrefix), "problem type %q is not %s<slug>", p.Type, problemTypePrefix)
				assert.Equal(t, ex.expectField, p.Field, "x-expect-field")
			} else {
				assert.Empty(t, ex.expectField, "x-expect-field is for problems")
			}
			if ex.expectItems != nil {
				checkItems(t, ex.expectItems, got)
			}

			validateResponse(t, in, resp, got, ex.String())

			// The response example of the same name is the answer.
			rr := ex.op.Responses.Status(resp.StatusCode)
			require.NotNil(t, rr, "status %d is not documented", resp.StatusCode)
			mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
			media := rr.Value.Content.Get(mt)
			require.NotNil(t, media, "%s is not documented for %d", mt, resp.StatusCode)
			want, ok := media.Examples[ex.name]
			require.True(t, ok, "status %d has no response example %q", resp.StatusCode, ex.name)
			var actual any
			require.NoError(t, json.Unmarshal(got, &actual))
			for _, d := range diffJSON("", want.Value.Value, actual) {
				t.Errorf("response example %q: %s", ex.name, d)
			}
		})
	}
}

// checkItems checks a batch answer against x-expect-items, and that its
// counts add its outcomes up.
func checkItems(t *testing.T, want []itemExpectation, body []byte) {
	t.Helper()
	var out httpapi.BatchResponse
	require.NoError(t, json.Unmarshal(body, &out))
	require.Len(t, out.Results, len(want), "one result per item")
	counts := map[string]int{}
	for i, r := range out.Results {
		counts[r.Outcome]++
		assert.Equal(t, want[i].Outcome, r.Outcome, "item %d outcome", i)
		switch r.Outcome {
		case "enqueued", "known":
			assert.Nil(t, r.Error, "item %d", i)
			assert.NotNil(t, r.Status, "item %d", i)
		default:
			if assert.NotNil(t, r.Error, "item %d error", i) {
				assert.Equal(t, want[i].Field, r.Error.Field, "item %d error.field", i)
				assert.True(t, strings.HasPrefix(r.Error.Type, problemTypePrefix), "item %d error.type %q is not %s<slug>", i, r.Error.Type, problemTypePrefix)
			}
		}
	}
	assert.Equal(t, counts, out.Counts)
}

// diffJSON lists where actual differs from the documented example doc:
// members (the same set), array lengths and values, but for volatile
// members, which need only be non-empty strings.
func diffJSON(path string, doc, actual any) []string {
	switch d := doc.(type) {
	case map[string]any:
		a, ok := actual.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: documented an object, got %v", cmpOr(path, "/"), actual)}
		}
		var out []string
		for _, k := range sortedKeys(d, a) {
			dv, inDoc := d[k]
			av, inActual := a[k]
			switch {
			case !inDoc:
				out = append(out, fmt.Sprintf("%s/%s: not documented, got %v", path, k, av))
			case !inActual:
				out = append(out, fmt.Sprintf("%s/%s: documented %v, absent", path, k, dv))
			case volatile[k]:
				if s, _ := av.(string); s == "" {
					out = append(out, fmt.Sprintf("%s/%s: want a non-empty string, got %v", path, k, av))
				}
			default:
				out = append(out, diffJSON(path+"/"+k, dv, av)...)
			}
		}
		return out
	case []any:
		a, ok := actual.([]any)
		if !ok || len(a) != len(d) {
			return []string{fmt.Sprintf("%s: documented %d elements, got %v", path, len(d), actual)}
		}
		var out []string
		for i := range d {
			out = append(out, diffJSON(path+"/"+strconv.Itoa(i), d[i], a[i])...)
		}
		return out
	}
	if doc != actual {
		return []string{fmt.Sprintf("%s: documented %v, got %v", path, doc, actual)}
	}
	return nil
}

func sortedKeys(ms ...map[string]any) []string {
	var keys []string
	for _, m := range ms {
		for k := range m {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	slices.Sort(keys)
	return keys
}

// documentedProblemTypes is the enum of Problem.type.
func documentedProblemTypes(t *testing.T, doc *openapi3.T) []string {
	t.Helper()
	var out []string
	for _, v := range doc.Components.Schemas["Problem"].Value.Properties["type"].Value.Enum {
		out = append(out, v.(string))
	}
	require.NotEmpty(t, out)
	return out
}

// sourceProblemSlugs lists the problem types written literally in
// httpapi.go: the third argument of problem(...) and the Type of a Problem
// literal.
func sourceProblemSlugs(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(gotoken.NewFileSet(), "httpapi.go", nil, 0)
	require.NoError(t, err)
	var out []string
	lit := func(e ast.Expr) {
		if b, ok := e.(*ast.BasicLit); ok && b.Kind == gotoken.STRING {
			s, err := strconv.Unquote(b.Value)
			require.NoError(t, err)
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			if id, ok := n.Fun.(*ast.Ident); ok && id.Name == "problem" && len(n.Args) >= 3 {
				lit(n.Args[2])
			}
		case *ast.CompositeLit:
			if id, ok := n.Type.(*ast.Ident); ok && id.Name == "Problem" {
				for _, el := range n.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Type" {
							lit(kv.Value)
						}
					}
				}
			}
		}
		return true
	})
	return out
}

// failingProducer is a producer whose store is down.
type failingProducer struct{}

var errStoreDown = errors.New("redis: connection refused")

func (failingProducer) EnqueueBatch(_ context.Context, reqs []tasks.Request) []producer.Result {
	out := make([]producer.Result, len(reqs))
	for i, r := range reqs {
		out[i] = producer.Result{RequestID: r.RequestID, Outcome: producer.Error, Err: errStoreDown}
	}
	return out
}

func (failingProducer) Get(context.Context, string) (status.Record, error) {
	return status.Record{}, errStoreDown
}

func (failingProducer) Batch(context.Context, string, string) (producer.BatchInfo, error) {
	return producer.BatchInfo{}, errStoreDown
}

func (failingProducer) Cancel(context.Context, string) (status.Record, error) {
	return status.Record{}, errStoreDown
}

func (failingProducer) Report(context.Context, string, string, io.Writer) (producer.ReportStats, error) {
	return producer.ReportStats{}, errStoreDown
}

func (failingProducer) Replay(context.Context, producer.ReplayFilter, bool, string) (producer.ReplayResult, error) {
	return producer.ReplayResult{}, errStoreDown
}

// Every problem the handler can produce, served or inside a batch result,
// has a type of the form https://cropq.dev/problems/<slug>, one the
// document lists; every type the document lists is produced; and every
// answer of a documented operation conforms to the document.
func TestOpenAPIProblemTypes(t *testing.T) {
	_, doc := readDoc(t)
	documented := documentedProblemTypes(t, doc)
	for _, typ := range documented {
		assert.True(t, strings.HasPrefix(typ, problemTypePrefix), typ)
	}
	for _, slug := range sourceProblemSlugs(t) {
		assert.Contains(t, documented, problemTypePrefix+strings.TrimPrefix(slug, problemTypePrefix),
			"httpapi.go writes problem type %q, which the document does not list", slug)
	}

	s := newServer(t, httpapi.Config{MaxBatch: 2, MaxBodyBytes: 1024, MaxBatchBodyBytes: 4096,
		MaxInflightBytes: 4096, InflightWait: 50 * time.Millisecond})
	api, err := httpapi.New(failingProducer{}, httpapi.Config{Tokens: []string{token}})
	require.NoError(t, err)
	down := httptest.NewServer(api)
	t.Cleanup(down.Close)

	seen := map[string]bool{}
	// check records the problems of an answer: served, or inside a batch's
	// results. route is the documented operation ("" for none).
	check := func(what, route string, params map[string]string, req *http.Request, reqBody []byte) {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err, what)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err, what)
		var problems []httpapi.Problem
		if resp.StatusCode >= 400 {
			problems = append(problems, decodeProblem(t, resp, body))
		} else if strings.HasSuffix(route, "/batch") {
			var out httpapi.BatchResponse
			require.NoError(t, json.Unmarshal(body, &out), what)
			for _, r := range out.Results {
				if r.Error != nil {
					problems = append(problems, *r.Error)
				}
			}
		}
		require.NotEmpty(t, problems, "%s: no problem in %d %s", what, resp.StatusCode, body)
		for _, p := range problems {
			seen[p.Type] = true
			assert.True(t, strings.HasPrefix(p.Type, problemTypePrefix), "%s: problem type %q is not %s<slug>", what, p.Type, problemTypePrefix)
			assert.Contains(t, documented, p.Type, "%s: problem type not documented", what)
			assert.NotEmpty(t, p.Title, what)
			assert.NotEmpty(t, p.Detail, what)
		}
		if route != "" {
			method, path, _ := strings.Cut(route, " ")
			vr := httptest.NewRequest(method, req.URL.Path, bytes.NewReader(reqBody))
			vr.Header = req.Header.Clone()
			validateResponse(t, requestInput(doc, vr, method, path, params), resp, body, what)
		}
	}
	newReq := func(srv *httptest.Server, method, path, contentType, tok string, body []byte) *http.Request {
		req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		require.NoError(t, err)
		if body == nil {
			req.Body, req.ContentLength = nil, 0
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		return req
	}
	cropJSON := func(id string, w any) string {
		return fmt.Sprintf(`{"requestId":%q,"imageUrl":"https://cdn.example.com/p/%s.jpg","targetWidth":%v,"targetHeight":800}`, id, id, w)
	}
	batch := func(items ...string) []byte { return []byte(`{"items":[` + strings.Join(items, ",") + `]}`) }
	type req struct {
		what, route string
		params      map[string]string
		srv         *httptest.Server
		method      string
		path        string
		contentType string
		tok         string
		body        []byte
	}
	const crops, batches, one = "POST /v1/crops", "POST /v1/crops/batch", "GET /v1/crops/{requestId}"
	id := map[string]string{"requestId": "sku-1"}
	const appJSON = "application/json"
	for _, c := range []req{
		{"no token", one, id, s, "GET", "/v1/crops/sku-1", "", "", nil},
		{"wrong token", crops, nil, s, "POST", "/v1/crops", appJSON, "nope", []byte(cropJSON("sku-1", 800))},
		{"no such route", "", nil, s, "GET", "/v1/nothing", "", token, nil},
		{"unknown id", one, id, s, "GET", "/v1/crops/sku-1", "", token, nil},
		{"unknown batch", "GET /v1/batches/{batchId}", map[string]string{"batchId": "b-1"}, s, "GET", "/v1/batches/b-1", "", token, nil},
		{"empty body", crops, nil, s, "POST", "/v1/crops", appJSON, token, []byte(`{}`)},
		{"trailing data", crops, nil, s, "POST", "/v1/crops", appJSON, token, []byte(cropJSON("sku-1", 800) + "{}")},
		{"duplicate member", crops, nil, s, "POST", "/v1/crops", appJSON, token, []byte(`{"requestId":"a","requestId":"b"}`)},
		{"invalid UTF-8", crops, nil, s, "POST", "/v1/crops", appJSON, token, []byte("{\"requestId\":\"a\xff\"}")},
		{"text/plain", crops, nil, s, "POST", "/v1/crops", "text/plain", token, []byte(cropJSON("sku-1", 800))},
		{"no content type", crops, nil, s, "POST", "/v1/crops", "", token, []byte(cropJSON("sku-1", 800))},
		{"batch as text/plain", batches, nil, s, "POST", "/v1/crops/batch", "text/plain", token, batch(cropJSON("sku-1", 800))},
		{"body too large", crops, nil, s, "POST", "/v1/crops", appJSON, token, []byte(cropJSON("sku-1", 800) + strings.Repeat(" ", 1024))},
		{"batch body too large", batches, nil, s, "POST", "/v1/crops/batch", appJSON, token, batch(cropJSON("sku-1", 800) + strings.Repeat(" ", 4096))},
		{"too many items", batches, nil, s, "POST", "/v1/crops/batch", appJSON, token, batch(cropJSON("sku-1", 800), cropJSON("sku-2", 800), cropJSON("sku-3", 800))},
		{"batch without items", batches, nil, s, "POST", "/v1/crops/batch", appJSON, token, []byte(`{"batchId":"b-1"}`)},
		{"another tenant", crops, nil, s, "POST", "/v1/crops", appJSON, token, []byte(strings.Replace(cropJSON("sku-1", 800), "{", `{"tenant":"acme",`, 1))},
		{"batch item of another tenant", batches, nil, s, "POST", "/v1/crops/batch", appJSON, token, batch(strings.Replace(cropJSON("sku-1", 800), "{", `{"tenant":"acme",`, 1))},
		{"enqueue", crops, nil, s, "POST", "/v1/crops", appJSON, token, []byte(cropJSON("sku-1", 800))},
		{"other parameters", crops, nil, s, "POST", "/v1/crops", appJSON, token, []byte(cropJSON("sku-1", 640))},
		{"batch items: invalid, conflict", batches, nil, s, "POST", "/v1/crops/batch", appJSON, token, batch(cropJSON("sku-2", `"abc"`), cropJSON("sku-1", 640))},
		{"cancel", "DELETE /v1/crops/{requestId}", id, s, "DELETE", "/v1/crops/sku-1", "", token, nil},
		{"cancel again", "DELETE /v1/crops/{requestId}", id, s, "DELETE", "/v1/crops/sku-1", "", token, nil},
		{"store down: crop", crops, nil, down, "POST", "/v1/crops", appJSON, token, []byte(cropJSON("sku-1", 800))},
		{"store down: batch item", batches, nil, down, "POST", "/v1/crops/batch", appJSON, token, batch(cropJSON("sku-1", 800))},
		{"store down: get", one, id, down, "GET", "/v1/crops/sku-1", "", token, nil},
		{"store down: cancel", "DELETE /v1/crops/{requestId}", id, down, "DELETE", "/v1/crops/sku-1", "", token, nil},
		{"store down: batch", "GET /v1/batches/{batchId}", map[string]string{"batchId": "b-1"}, down, "GET", "/v1/batches/b-1", "", token, nil},
		{"unknown batch report", "GET /v1/batches/{batchId}/report", map[string]string{"batchId": "b-1"}, s, "GET", "/v1/batches/b-1/report", "", token, nil},
		{"store down: report", "GET /v1/batches/{batchId}/report", map[string]string{"batchId": "b-1"}, down, "GET", "/v1/batches/b-1/report", "", token, nil},
	} {
		if c.what == "enqueue" || c.what == "cancel" {
			r := newReq(c.srv, c.method, c.path, c.contentType, c.tok, c.body)
			resp, err := http.DefaultClient.Do(r)
			require.NoError(t, err)
			resp.Body.Close()
			require.Less(t, resp.StatusCode, 300, c.what)
			continue
		}
		check(c.what, c.route, c.params, newReq(c.srv, c.method, c.path, c.contentType, c.tok, c.body), c.body)
	}

	// A body without a Content-Length that outgrows the limit while read.
	r := newReq(s, "POST", "/v1/crops", appJSON, token, nil)
	r.Body = io.NopCloser(strings.NewReader(cropJSON("sku-1", 800) + strings.Repeat(" ", 2048)))
	r.ContentLength = -1
	check("chunked body too large", crops, nil, r, nil)

	// busy: a body without a Content-Length reserves the whole limit; one
	// that never ends holds it, and the next request waits, then gets 503.
	pr, pw := io.Pipe()
	held := newReq(s, "POST", "/v1/crops/batch", appJSON, token, nil)
	held.Body, held.ContentLength = pr, -1
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(held); err == nil {
			resp.Body.Close()
		}
	}()
	var busy *http.Response
	var busyBody []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		resp, err := http.DefaultClient.Do(newReq(s, "POST", "/v1/crops", appJSON, token, []byte(cropJSON("sku-9", 800))))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			busy, busyBody = resp, b
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = pw.Close()
	<-done
	if assert.NotNil(t, busy, "no 503 while the in-flight budget is held") {
		p := decodeProblem(t, busy, busyBody)
		seen[p.Type] = true
		assert.Equal(t, problemTypePrefix+"busy", p.Type)
		assert.NotEmpty(t, busy.Header.Get("Retry-After"))
		vr := httptest.NewRequest("POST", "/v1/crops", strings.NewReader(cropJSON("sku-9", 800)))
		vr.Header.Set("Content-Type", appJSON)
		vr.Header.Set("Authorization", "Bearer "+token)
		validateResponse(t, requestInput(doc, vr, "POST", "/v1/crops", nil), busy, busyBody, "busy")
	}

	for _, typ := range documented {
		assert.True(t, seen[typ], "the document lists problem type %s, which no request produced", typ)
	}
}

// The patterns of the document's schemas agree with the server's rules
// (tasks.Request.Validate) on many values: the schema refuses what the
// server refuses, and accepts what it accepts. Empty values, which mean
// "absent" to the server, are left out: the document says to omit them.
func TestOpenAPIPatternsMatchValidation(t *testing.T) {
	_, doc := readDoc(t)
	props := doc.Components.Schemas["CropRequest"].Value.Properties
	rng := rand.New(rand.NewPCG(1, 2))
	gen := func(alphabet []string, maxLen int) string {
		var b strings.Builder
		for range 1 + rng.IntN(maxLen) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	for _, f := range []struct {
		field    string
		set      func(*tasks.Request, string)
		fixed    []string
		alphabet []string
		maxLen   int
	}{
		{"requestId", func(r *tasks.Request, v string) { r.RequestID = v },
			[]string{"sku-1", "a", "a.", "a..b", ".a", "-a", "a/b", "A:b_c-d.e", strings.Repeat("a", 128), strings.Repeat("a", 129)},
			[]string{"a", "Z", "0", ".", "_", ":", "-", "/", " ", "é"}, 6},
		{"batchId", func(r *tasks.Request, v string) { r.BatchID = v },
			[]string{"feed-2024-06-01", "feed/2024", "a..b", "b.", strings.Repeat("b", 129)},
			[]string{"b", "9", ".", "_", ":", "-", "/"}, 6},
		{"bucket", func(r *tasks.Request, v string) { r.Bucket = v },
			[]string{"shop-crops", "Shop_Crops", "ab", "abc", "a.b", "a..b", "a-.b", "a.-b", "-ab", "ab-", "ab.", "1.2.3.4", "1.2.3.400",
				"01.2.3.4", "1.2.3", "256.1.1.1", strings.Repeat("a", 63), strings.Repeat("a", 64)},
			[]string{"a", "z", "0", "1", "9", ".", "-", "_", "A"}, 9},
		{"keyTemplate", func(r *tasks.Request, v string) { r.KeyTemplate = v },
			[]string{"products/{requestId}/{width}x{height}.{ext}", "../../x/{requestId}.{ext}", "/a", "a/", "a//b", "./a", "a/.",
				"..a/b", ".a", "...", "{requestId}", "{requestid}", "{foo}", "a{", "a}", "{{ext}}", "{date}/{ext}", "a/../b"},
			[]string{"a", "x", ".", "/", "-", "_", "{requestId}", "{ext}", "{date}", "{width}", "{height}", "{nope}", "{", "}"}, 7},
		{"tenant", func(r *tasks.Request, v string) { r.Tenant = v },
			[]string{"acme", "default", "a.b_c-d", "..", "ACME", "a:b", "a b", "é", strings.Repeat("t", 64), strings.Repeat("t", 65)},
			[]string{"a", "z", "0", "9", ".", "_", "-", "A", ":", ",", "=", " ", "é", "/"}, 6},
		{"priority", func(r *tasks.Request, v string) { r.Priority = v },
			[]string{"urgent", "normal", "backfill", "high", "Urgent", "urgent ", "low"},
			[]string{"urgent", "normal", "backfill", "x", " ", "U"}, 2},
	} {
		values := f.fixed
		for range 3000 {
			values = append(values, gen(f.alphabet, f.maxLen))
		}
		for _, v := range values {
			r := tasks.Request{RequestID: "sku-1", ImageURL: "https://cdn.example.com/p/1.jpg", Params: tasks.Params{TargetWidth: 800, TargetHeight: 800}}
			f.set(&r, v)
			if v == "" {
				continue
			}
			err := r.Validate(tasks.Rules{})
			var ve *cropapi.ValidationError
			if err != nil {
				require.ErrorAs(t, err, &ve)
				require.Equal(t, f.field, ve.Field, "%s %q: %v", f.field, v, err)
			}
			schemaErr := props[f.field].Value.VisitJSON(v)
			assert.Equal(t, err == nil, schemaErr == nil, "%s %q: server says %v; document says %v", f.field, v, err, schemaErr)
		}
	}
}

func (failingProducer) RegisterManifest(context.Context, string, producer.ManifestRequest) (producer.BatchInfo, error) {
	return producer.BatchInfo{}, errStoreDown
}

// The request schemas are the request model's fields, one by one: the
// CropRequest schema has a property for each field of tasks.Request and no
// other, and the Record schema one for each of tasks.Params (the part a
// record keeps), each of the JSON type the field encodes to. A field added
// to the model without its schema fails here.
func TestOpenAPIRequestSchemasAreTheRequestModel(t *testing.T) {
	_, doc := readDoc(t)
	jsonType := map[reflect.Kind]string{reflect.String: "string", reflect.Int: "integer", reflect.Map: "object", reflect.Pointer: "boolean"}
	crop := doc.Components.Schemas["CropRequest"].Value
	record := doc.Components.Schemas["Record"].Value
	var names []string
	for _, f := range tasks.Fields() {
		names = append(names, f.Name)
		want, ok := jsonType[f.Kind]
		require.True(t, ok, "field %s: kind %s has no JSON type here", f.Name, f.Kind)
		if p := crop.Properties[f.Name]; assert.NotNil(t, p, "CropRequest lacks %s", f.Name) {
			assert.True(t, p.Value.Type.Is(want), "CropRequest.%s: want type %s", f.Name, want)
		}
	}
	assert.ElementsMatch(t, names, slices.Collect(maps.Keys(crop.Properties)), "CropRequest's properties are tasks.Request's fields")

	for _, f := range reflect.VisibleFields(reflect.TypeFor[tasks.Params]()) {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		want := jsonType[f.Type.Kind()]
		if p := record.Properties[name]; assert.NotNil(t, p, "Record lacks %s (tasks.Params)", name) {
			assert.True(t, p.Value.Type.Is(want), "Record.%s: want type %s", name, want)
		}
	}
}
