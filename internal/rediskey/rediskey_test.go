package rediskey_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/cropq/cropq/internal/rediskey"
)

// TestKeys pins every key to the letter: a deployment's data is found
// under these names, so a change here is a migration, never a refactor.
func TestKeys(t *testing.T) {
	d, p := rediskey.Default, rediskey.Prefix("acme:")
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("X", 3600))
	for _, tc := range []struct{ got, want string }{
		{d.Status("sku-1"), "cropq:status:{sku-1}"},
		{p.Status("sku-1"), "acme:status:{sku-1}"},
		{d.StatusPattern(), "cropq:status:{*}"},
		{d.Events(), "cropq:events"},
		{p.Events(), "acme:events"},
		{d.Batch("", "june"), "cropq:batch:{june}"},
		{d.Batch("acme", "june"), "cropq:batch:{acme/june}"},
		{d.BatchIDs("", "june"), "cropq:batch:{june}:ids"},
		{d.BatchState("acme", "june", "queued"), "cropq:batch:{acme/june}:queued"},
		{d.BatchPaid("", "june"), "cropq:batch:{june}:paid"},
		{d.BatchReport("", "june"), "cropq:batch:{june}:report"},
		{d.Batches(), "cropq:batches"},
		{d.Failures(at), "cropq:failures:2026030404"},
		{d.ReportsDue(), "cropq:reports:due"},
		{d.Manifests(), "cropq:manifests"},
		{d.Failed(), "cropq:failed"},
		{d.Replays(), "cropq:failed:replays"},
		{d.MigratedWaitingTTL(), "cropq:migrated:waiting-ttl"},
		{d.CropLeases(), "cropq:leases"},
		{d.DedupEntry("k1"), "cropq:dedup:{k1}"},
		{d.DedupClaim("k1"), "cropq:dedup:{k1}:lease"},
		{d.DedupSaved(), "cropq:dedup:saved"},
		{d.DedupRef("ref/0a"), "cropq:dedup:ref/0a"},
		{d.QuotaState("main"), "cropq:quota:{main}:state"},
		{d.QuotaGCRA("main"), "cropq:quota:{main}:gcra"},
		{d.QuotaUsage("main", at), "cropq:quota:{main}:usage:20260304"},
		{d.Backlog("urgent", "acme"), "cropq:backlog:{urgent:acme}"},
		{d.BacklogActive(), "cropq:backlog:active"},
		{d.BacklogUnreadable(), "cropq:backlog:unreadable"},
		{d.FeederLock(), "cropq:backlog:feeder"},
		{d.Budget("acme", "d20260304"), "cropq:budget:{acme}:d20260304"},
		{d.Writable("host-1"), "cropq:writable:host-1"},
		{rediskey.Prefix("").OrDefault().Events(), "cropq:events"},
		{p.OrDefault().Events(), "acme:events"},
		{rediskey.AsynqPending("crops"), "asynq:{crops}:pending"},
		{rediskey.AsynqActive("crops"), "asynq:{crops}:active"},
		{rediskey.AsynqRetry("crops"), "asynq:{crops}:retry"},
		{rediskey.AsynqTask("crops", "url-1"), "asynq:{crops}:t:url-1"},
	} {
		assert.Equal(t, tc.want, tc.got)
	}
}

func TestRequestIDOf(t *testing.T) {
	for _, tc := range []struct {
		key, id string
		ok      bool
	}{
		{"cropq:status:{sku-1}", "sku-1", true},
		{"cropq:status:{}", "", true},
		{"cropq:status:{sku-1", "", false},
		{"other:status:{sku-1}", "", false},
		{"cropq:batch:{sku-1}", "", false},
	} {
		id, ok := rediskey.Default.RequestIDOf(tc.key)
		assert.Equal(t, tc.ok, ok, tc.key)
		assert.Equal(t, tc.id, id, tc.key)
	}
}

// keyLiteral matches a string constant that looks like one of the keys
// above, or a piece of one: such a key is built here, not where it is used.
// (Messages such as "backlog: push: …" are not keys: no space follows a
// key's colon.)
var keyLiteral = regexp.MustCompile(`cropq:[^ ]|^asynq:\{|asynq:\{[^}]*\}:[a-z]|` +
	`^(status|batch|dedup|quota|backlog|budget|failures|reports|migrated|writable):([^ ]|$)|` +
	`^:(ids|paid|report|lease|replays|state|gcra|usage:|pending|active|retry|t:)$`)

// taskTypes are asynq task type names, not keys: they keep "cropq:"
// whatever the key prefix is.
var taskTypes = map[string]bool{"cropq:crop": true, "cropq:webhook": true}

// TestNoKeysBuiltElsewhere fails on a key, or a piece of one, written as a
// string literal in any Go file of the module outside this package: the
// tests and benchmarks read keys through this package too.
func TestNoKeysBuiltElsewhere(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == here || (path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		files++
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err == nil && keyLiteral.MatchString(s) && !taskTypes[s] {
				t.Errorf("%s: %s: build this key in internal/rediskey", fset.Position(lit.Pos()), lit.Value)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	assert.Greater(t, files, 100, "the walk reads the module's Go files")
}
