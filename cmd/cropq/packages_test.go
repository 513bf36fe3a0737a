package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's package tables name every package of the module, and only
// those: the layout and its documentation cannot drift apart.
func TestREADMEPackageTablesMatchTheTree(t *testing.T) {
	root := filepath.Join("..", "..")
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	readme := string(b)
	start := strings.Index(readme, "## Packages\n")
	require.GreaterOrEqual(t, start, 0, "README has a Packages section")
	section := readme[start+len("## Packages\n"):]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	// A row's first cell names one or more paths: | `a`, `b` (note) | … |
	named := map[string]bool{}
	cell := regexp.MustCompile(`(?m)^\| ([^|]+) \|`)
	path := regexp.MustCompile("`([a-z0-9/_-]+)`")
	for _, row := range cell.FindAllStringSubmatch(section, -1) {
		for _, p := range path.FindAllStringSubmatch(row[1], -1) {
			named[p[1]] = true
		}
	}

	have := map[string]bool{}
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			switch {
			case rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "artifacts" || d.Name() == "bin"):
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			have[filepath.ToSlash(filepath.Dir(rel))] = true
		}
		return nil
	}))
	// deploy's Go code is its tests; it is a module of its own, named as one.
	have["deploy"] = true
	for p := range have {
		if p == "." {
			continue
		}
		// A package is named itself, or by its parent when it is a test
		// helper of it (…test) or below a named command or example.
		ok := named[p] || (strings.HasSuffix(p, "test") && named[filepath.ToSlash(filepath.Dir(p))])
		assert.True(t, ok, "package %s is missing from the README's package tables", p)
	}
	for p := range named {
		assert.True(t, have[p], "the README's package tables name %s, which has no Go package", p)
	}
}
