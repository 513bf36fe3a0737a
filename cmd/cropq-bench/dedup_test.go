package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// The benchmark's catalogue has the shares the issue asks for, repeats
// both at once and waves later, and the unique fractions the benchmark
// judges against.
func TestCatalogueShares(t *testing.T) {
	c := newCatalogue(2000, 4)
	n := float64(len(c.items))
	assert.InDelta(t, 0.35, float64(c.repeats)/n, 0.03)
	assert.InDelta(t, 0.10, float64(c.aliases)/n, 0.02)
	assert.Less(t, c.uniqueByBytes, c.uniqueByKey, "the same bytes under other names are unique only by key")
	assert.InDelta(t, 0.55, float64(c.uniqueByBytes)/n, 0.04)
	sameWave, laterWave := 0, 0
	first := map[string]int{}
	for _, it := range c.items {
		if it.path == "" {
			continue
		}
		k := it.path + string(rune(it.width)) + string(rune(it.height))
		w, seen := first[k]
		switch {
		case !seen:
			first[k] = it.wave
		case w == it.wave:
			sameWave++
		default:
			laterWave++
		}
	}
	assert.Greater(t, sameWave, 100, "repeats at the same moment")
	assert.Greater(t, laterWave, 100, "repeats long after")
	t.Logf("unique by key %d, by bytes %d; repeats %d (same wave %d, later %d); aliases %d", c.uniqueByKey, c.uniqueByBytes, c.repeats, sameWave, laterWave, c.aliases)
}

// Image numbers stand for distinct bytes: the catalogue counts unique
// images by number.
func TestCatalogueImagesAreDistinct(t *testing.T) {
	seen := map[string]int{}
	for n := range 300 {
		b := string(catalogueImage(n))
		if m, dup := seen[b]; dup {
			t.Fatalf("images %d and %d are the same bytes", m, n)
		}
		seen[b] = n
	}
}
