package worker

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every Code declared in this package has a payment decision, and
// Classify returns only declared Codes (or the API's own): a new failure code cannot appear
// without someone deciding whether it may cost a paid call.
func TestEveryCodeHasAPaymentDecision(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	declared := map[string]bool{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		require.NoError(t, err)
		f, err := parser.ParseFile(fset, name, src, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				if id, ok := n.Type.(*ast.Ident); ok && id.Name == "Code" {
					for i, v := range n.Values {
						lit, ok := v.(*ast.BasicLit)
						require.True(t, ok, "%s: a Code is a string literal", n.Names[i].Name)
						declared[strings.Trim(lit.Value, `"`)] = true
					}
				}
			case *ast.FuncDecl:
				if n.Name.Name == "Classify" {
					// No string literal may become a code outside the const block.
					ast.Inspect(n.Body, func(m ast.Node) bool {
						if ret, ok := m.(*ast.ReturnStmt); ok {
							for _, r := range ret.Results {
								_, isLit := r.(*ast.BasicLit)
								assert.False(t, isLit, "Classify returns a literal at %s: declare a Code", fset.Position(r.Pos()))
							}
						}
						return true
					})
				}
			}
			return true
		})
	}
	require.NotEmpty(t, declared)
	for c := range declared {
		d, ok := PaidFailures[Code(c)]
		if assert.True(t, ok, "code %q has no entry in PaidFailures: decide whether it can end a request after a paid call", c) {
			assert.NotEmpty(t, d.Why, "code %q: say why", c)
		}
	}
	assert.Len(t, PaidFailures, len(declared), "PaidFailures lists a code that is not declared")
}
