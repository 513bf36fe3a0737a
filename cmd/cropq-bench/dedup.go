package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// benchDedup runs the result-reuse benchmark (make bench-dedup): a
// synthetic catalogue through real processes (emulator, Redis, MinIO, worker
// processes), with reuse off (the baseline), on, and on with
// CROPQ_DEDUP_FETCH, at the same quota.
func benchDedup(ctx context.Context, env *benchEnv, o options, progress io.Writer) ([]row, error) {
	bin, err := buildCropq(ctx, env)
	if err != nil {
		return nil, err
	}
	cat := newCatalogue(o.dedupN, o.dedupWaves)
	cat.draw()
	variants := []struct {
		name  string
		extra []string
	}{
		{"dedup off (baseline)", []string{"CROPQ_DEDUP_SCOPE=off"}},
		{"dedup on (scope tenant)", []string{"CROPQ_DEDUP_SCOPE=tenant"}},
		{"dedup on, CROPQ_DEDUP_FETCH=true", []string{"CROPQ_DEDUP_SCOPE=tenant", "CROPQ_DEDUP_FETCH=true"}},
	}
	runs := make([]dedupRun, len(variants))
	for i, v := range variants {
		fmt.Fprintf(progress, "cropq-bench: dedup: %s…\n", v.name)
		if runs[i], err = runDedup(ctx, env, bin, o, cat, v.extra); err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
	}
	n := float64(len(cat.items))
	byKey, byBytes := float64(cat.uniqueByKey)/n, float64(cat.uniqueByBytes)/n
	base := runs[0]
	rows := []row{{"dedup", fmt.Sprintf("catalogue: %d requests in %d waves (%.0f %% repeat a (URL, size), %.0f %% the same bytes under another URL or as base64)",
		len(cat.items), o.dedupWaves, 100*float64(cat.repeats)/n, 100*float64(cat.aliases)/n), fmt.Sprintf("unique by crop key %.3f, by bytes %.3f", byKey, byBytes), "", "", ""}}
	for i, v := range variants {
		r := runs[i]
		paid := float64(r.paid) / n
		var target, verdictS string
		switch i {
		case 0:
			target, verdictS = "1.000", verdict(math.Abs(paid-1) < 0.0005)
		case 1:
			target, verdictS = fmt.Sprintf("%.3f ± 0.005", byKey), verdict(math.Abs(paid-byKey) <= 0.005)
		case 2:
			target, verdictS = fmt.Sprintf("%.3f ± 0.005", byBytes), verdict(math.Abs(paid-byBytes) <= 0.005)
		}
		rows = append(rows,
			row{"dedup", v.name + ": paid calls ÷ requests", fmt.Sprintf("%.3f (%d)", paid, r.paid), fmt.Sprintf("%.2f", paid/(float64(base.paid)/n)), target, verdictS},
			row{"dedup", "  throughput (requests stored/s)", fmt.Sprintf("%.1f", r.throughput), fmt.Sprintf("%.2f", r.throughput/base.throughput), "≥ 1.00", verdict(r.throughput >= base.throughput)},
			row{"dedup", "  calls saved: reused / coalesced", fmt.Sprintf("%d / %d", r.saved["reused"], r.saved["coalesced"]), "", "", ""},
			row{"dedup", "  objects not byte-identical to the one reused, or not at the request's own key", strconv.Itoa(r.bad), "", "0", verdict(r.bad == 0)},
		)
		if r.entries > 0 {
			rows = append(rows, row{"dedup", "  index: Redis bytes per entry (MEMORY USAGE)", fmt.Sprintf("%.0f B (%d entries)", r.entryBytes, r.entries), "", "", ""})
		}
	}
	return rows, nil
}

// catalogue is the synthetic load: unique images, repeats of an earlier
// (URL, size) pair (some at once, some waves later), and the same bytes
// under another URL or as base64.
type catalogue struct {
	items                      []catalogueItem
	images                     map[int][]byte
	uniqueByKey, uniqueByBytes int
	repeats, aliases           int
	numImages                  int
}

type catalogueItem struct {
	wave  int
	image int
	// path is the URL path on the image server; "" for base64.
	path          string
	width, height int
}

var dedupSizes = [][2]int{{300, 300}, {400, 300}, {500, 500}}

func newCatalogue(n, waves int) *catalogue {
	rng := rand.New(rand.NewPCG(14, 2026))
	c := &catalogue{images: map[int][]byte{}}
	perWave := (n + waves - 1) / waves
	next := 0
	var urlItems []int // indexes of URL items, for repeats
	for i := range n {
		w := i / perWave
		var it catalogueItem
		switch r := rng.Float64(); {
		case r < 0.35 && len(urlItems) > 0:
			// A repeat: half at once (one of the last few, fed together),
			// half of an earlier wave (long after), when there is one.
			var src int
			earlier := urlItems[:countBefore(c.items, urlItems, w)]
			if rng.IntN(2) == 0 || len(earlier) == 0 {
				recent := urlItems[max(0, len(urlItems)-6):]
				src = recent[rng.IntN(len(recent))]
			} else {
				src = earlier[rng.IntN(len(earlier))]
			}
			it = c.items[src]
			c.repeats++
		case r < 0.45 && len(c.items) > 0:
			// The same bytes and size as an earlier request, under a new URL
			// or as base64.
			src := c.items[rng.IntN(len(c.items))]
			it = catalogueItem{image: src.image, width: src.width, height: src.height}
			if rng.IntN(2) == 0 {
				it.path = fmt.Sprintf("/alias/%d/%d.png", src.image, i)
			}
			c.aliases++
		default:
			sz := dedupSizes[rng.IntN(len(dedupSizes))]
			it = catalogueItem{image: next, path: fmt.Sprintf("/img/%d.png", next), width: sz[0], height: sz[1]}
			next++
		}
		it.wave = w
		if it.path != "" {
			urlItems = append(urlItems, len(c.items))
		}
		c.items = append(c.items, it)
	}
	// Every image number has bytes of its own (catalogueImage).
	byKey, byBytes := map[string]bool{}, map[string]bool{}
	for _, it := range c.items {
		size := fmt.Sprintf("%dx%d", it.width, it.height)
		bytesID := fmt.Sprintf("image %d %s", it.image, size)
		byBytes[bytesID] = true
		if it.path != "" {
			byKey[it.path+size] = true
		} else {
			byKey[bytesID] = true
		}
	}
	c.uniqueByKey, c.uniqueByBytes = len(byKey), len(byBytes)
	c.numImages = next
	return c
}

// draw makes the catalogue's images.
func (c *catalogue) draw() {
	for n := range c.numImages {
		c.images[n] = catalogueImage(n)
	}
}

// countBefore is how many of urlItems belong to waves before w.
func countBefore(items []catalogueItem, urlItems []int, w int) int {
	k := 0
	for k < len(urlItems) && items[urlItems[k]].wave < w {
		k++
	}
	return k
}

// catalogueImage is image n: 512×512 (the smallest base64 image the API
// takes), distinct per n, cheap to crop and to encode.
func catalogueImage(n int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 512, 512))
	bg := color.RGBA{uint8(n), uint8(n >> 8), uint8(n * 7), 255}
	fg := color.RGBA{255 - bg.R, 255 - bg.G, 255 - bg.B, 255}
	x0, y0 := (n*37)%384, (n*91)%384
	for y := range 512 {
		for x := range 512 {
			c := bg
			if x >= x0 && x < x0+128 && y >= y0 && y < y0+128 {
				c = fg
			}
			img.SetRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	_ = enc.Encode(&buf, img)
	return buf.Bytes()
}

// handler serves the catalogue's images at /img/N.png and /alias/N/I.png.
func (c *catalogue) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.TrimSuffix(r.URL.Path, ".png"), "/")
		if len(parts) < 3 {
			http.NotFound(w, r)
			return
		}
		n, err := strconv.Atoi(parts[2])
		img, ok := c.images[n]
		if err != nil || !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Length", strconv.Itoa(len(img)))
		_, _ = w.Write(img)
	})
}

type dedupRun struct {
	paid       int64
	throughput float64
	saved      map[string]int64
	bad        int
	entries    int
	entryBytes float64
}

func runDedup(ctx context.Context, env *benchEnv, bin string, o options, cat *catalogue, extra []string) (res dedupRun, err error) {
	f, err := launchFleet(ctx, env, bin, fleetSpec{q: o.dedupQ, pods: o.dedupPods, concurrency: o.dedupConcurrency, images: cat.handler(),
		cropCache: 4096, bucket: fmt.Sprintf("bench-dedup-%d", time.Now().UnixNano()), extra: extra})
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := f.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	reqs := make([]tasks.Request, len(cat.items))
	for i, it := range cat.items {
		r := tasks.Request{RequestID: fmt.Sprintf("cat-%05d", i), Params: tasks.Params{TargetWidth: it.width, TargetHeight: it.height}}
		if it.path != "" {
			r.ImageURL = f.images + it.path
		} else {
			r.ImageBase64 = base64.StdEncoding.EncodeToString(cat.images[it.image])
		}
		reqs[i] = r
	}
	start := time.Now()
	for w, lo := 0, 0; lo < len(reqs); w++ {
		hi := lo
		for hi < len(reqs) && cat.items[hi].wave == w {
			hi++
		}
		ids := make([]string, 0, hi-lo)
		for i := lo; i < hi; i += 500 {
			if err := checkResults(f.prod.EnqueueBatch(ctx, reqs[i:min(i+500, hi)])); err != nil {
				return res, err
			}
		}
		for _, r := range reqs[lo:hi] {
			ids = append(ids, r.RequestID)
		}
		// The next wave comes once this one is done: its repeats arrive
		// long after their first occurrence.
		if err := f.await(ctx, ids, 15*time.Minute, nil); err != nil {
			return res, err
		}
		lo = hi
	}
	wall := time.Since(start)
	ids := make([]string, len(reqs))
	for i, r := range reqs {
		ids[i] = r.RequestID
	}
	recs, err := f.records(ctx, ids)
	if err != nil {
		return res, err
	}
	res.throughput = float64(len(reqs)) / wall.Seconds()
	res.paid = f.emu.Stats().Usage
	saved, err := f.rdb.HGetAll(ctx, rediskey.Default.DedupSaved()).Result()
	if err != nil {
		return res, err
	}
	res.saved = map[string]int64{}
	for k, v := range saved {
		res.saved[k], _ = strconv.ParseInt(v, 10, 64)
	}
	if res.bad, err = checkObjects(ctx, f, recs); err != nil {
		return res, err
	}
	res.entries, res.entryBytes, err = indexBytes(ctx, f)
	return res, err
}

// checkObjects counts the requests that did not succeed, that have no
// object at their own key, or whose object differs from the one of the
// request they reused.
func checkObjects(ctx context.Context, f *fleet, recs []status.Record) (int, error) {
	digests := map[string]string{} // request id → sha256 of its object
	var mu sync.Mutex
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var firstErr error
	for _, rec := range recs {
		if rec.State != status.Succeeded || rec.Stored == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(rec status.Record) {
			defer wg.Done()
			defer func() { <-sem }()
			gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			obj, err := f.s3.GetObject(gctx, &s3.GetObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(rec.Stored.Key)})
			var sum [32]byte
			if err == nil {
				var b []byte
				b, err = io.ReadAll(obj.Body)
				obj.Body.Close()
				sum = sha256.Sum256(b)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("get %s: %w", rec.Stored.Key, err)
				}
				return
			}
			digests[rec.RequestID] = hex.EncodeToString(sum[:])
		}(rec)
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	bad := 0
	for _, rec := range recs {
		switch {
		case rec.State != status.Succeeded || rec.Stored == nil,
			!strings.HasPrefix(rec.Stored.Key, "crops/"+rec.RequestID+"/"),
			rec.ReusedFrom != "" && (rec.PaidCalls != 0 || digests[rec.ReusedFrom] != digests[rec.RequestID]):
			bad++
		}
	}
	return bad, nil
}

// indexBytes is the mean MEMORY USAGE of the dedup index's entries.
func indexBytes(ctx context.Context, f *fleet) (int, float64, error) {
	var total int64
	n := 0
	iter := f.rdb.Scan(ctx, 0, rediskey.Default.DedupEntry("*"), 1000).Iterator()
	for iter.Next(ctx) {
		used, err := f.rdb.MemoryUsage(ctx, iter.Val()).Result()
		if err != nil {
			return 0, 0, err
		}
		total += used
		n++
	}
	if err := iter.Err(); err != nil {
		return 0, 0, err
	}
	if n == 0 {
		return 0, 0, nil
	}
	return n, float64(total) / float64(n), nil
}
