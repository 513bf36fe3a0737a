package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/cropapi/cropapitest"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// benchResync runs the nightly re-sync benchmark (make bench-resync): a
// catalogue re-sent under new request ids, through real processes
// (emulator, Redis, MinIO, worker processes), at a low quota. Baselines
// from the same run: the same re-sync through the path before
// CROPQ_DEDUP_SOURCE and the free window (CROPQ_DEDUP_SOURCE=url,
// CROPQ_FREE_WINDOW=off), on a smaller sample, and a bare S3 CopyObject
// loop.
func benchResync(ctx context.Context, env *benchEnv, o options, progress io.Writer) ([]row, error) {
	bin, err := buildCropq(ctx, env)
	if err != nil {
		return nil, err
	}
	say := func(format string, a ...any) { fmt.Fprintf(progress, "cropq-bench: resync: "+format+"\n", a...) }

	say("baseline: %d ids over %d stored crops through the paid window (CROPQ_DEDUP_SOURCE=url, CROPQ_FREE_WINDOW=off)…", o.resyncBaseN, o.resyncBaseCrops)
	base, err := runResync(ctx, env, bin, o, resyncSpec{crops: o.resyncBaseCrops, n: o.resyncBaseN, validators: true,
		extra: []string{"CROPQ_DEDUP_SOURCE=url", "CROPQ_FREE_WINDOW=off"}}, say)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	say("re-sync: %d ids over %d stored crops, %d new listings behind, then %.0f %% replaced…", o.resyncN, o.resyncCrops, o.resyncNew, 100*o.resyncReplaced)
	main, err := runResync(ctx, env, bin, o, resyncSpec{crops: o.resyncCrops, n: o.resyncN, fresh: o.resyncNew, replaced: o.resyncReplaced,
		validators: true, copyLoop: o.resyncCopies, extra: []string{"CROPQ_DEDUP_SOURCE=validators"}}, say)
	if err != nil {
		return nil, fmt.Errorf("re-sync: %w", err)
	}
	say("origin without validators: %d ids over %d crops, %.0f %% replaced…", o.resyncBaseN, o.resyncBaseCrops, 100*o.resyncReplaced)
	noval, err := runResync(ctx, env, bin, o, resyncSpec{crops: o.resyncBaseCrops, n: o.resyncBaseN, replaced: o.resyncReplaced,
		validators: false, extra: []string{"CROPQ_DEDUP_SOURCE=validators"}}, say)
	if err != nil {
		return nil, fmt.Errorf("no validators: %w", err)
	}

	newTarget := float64(o.resyncNew)/o.resyncQ + 5
	rows := []row{
		{"resync", fmt.Sprintf("Q = %g/s, %d workers × %d; the emulator takes 200 ± 100 ms per call", o.resyncQ, o.resyncPods, o.resyncConcurrency), "", "", "", ""},
		{"resync", fmt.Sprintf("baseline: %d new ids over %d stored crops, the path before (url keys, the quota's window)", o.resyncBaseN, o.resyncBaseCrops),
			fmt.Sprintf("%.1f req/s (%.1f × Q)", base.rps, base.rps/o.resyncQ), "1.00", "", ""},
		{"resync", fmt.Sprintf("re-sync: %d new ids over %d stored crops (validators, crops-free)", o.resyncN, o.resyncCrops),
			fmt.Sprintf("%.1f req/s (%.1f × Q)", main.rps, main.rps/o.resyncQ), fmt.Sprintf("%.2f", main.rps/base.rps), "≥ 200 req/s", verdict(main.rps >= 200)},
		{"resync", "  bare S3 CopyObject loop, same concurrency (baseline)", fmt.Sprintf("%.1f copies/s", main.copyRate), "", "", ""},
		{"resync", "  re-sync ÷ CopyObject loop", fmt.Sprintf("%.2f", main.rps/main.copyRate), "", "≥ 0.50", verdict(main.rps/main.copyRate >= 0.5)},
		{"resync", "  paid calls of the re-sync", strconv.Itoa(main.paidA), "", "0", verdict(main.paidA == 0)},
		{"resync", "  origin requests (revalidations) per re-sync line", fmt.Sprintf("%.2f", main.originPerLine), "", "≤ 1", verdict(main.originPerLine <= 1.0001)},
		{"resync", fmt.Sprintf("  %d new listings submitted right behind it: all done after", o.resyncNew), fmt.Sprintf("%.1f s", main.freshDone.Seconds()), "",
			fmt.Sprintf("≤ %.0f s (%d ÷ Q + 5)", newTarget, o.resyncNew), verdict(main.freshDone.Seconds() <= newTarget)},
		{"resync", fmt.Sprintf("%.0f %% replaced behind the same URLs (%d images), %d ids again: paid calls", 100*o.resyncReplaced, main.replaced, o.resyncN),
			strconv.Itoa(main.paidB), "", fmt.Sprintf("= %d", main.replaced), verdict(main.paidB == main.replaced)},
		{"resync", "  … stored objects not the crop of the current image (stale), of all checked", fmt.Sprintf("%d of %d", main.stale, main.checked), "", "0", verdict(main.stale == 0 && main.checked > 0)},
		{"resync", "  … re-sync throughput with the replaced images", fmt.Sprintf("%.1f req/s", main.rpsB), fmt.Sprintf("%.2f", main.rpsB/base.rps), "", ""},
		{"resync", fmt.Sprintf("origin without validators (digest fallback), %d ids over %d crops, %d replaced: paid calls", o.resyncBaseN, o.resyncBaseCrops, noval.replaced),
			strconv.Itoa(noval.paidB), "", fmt.Sprintf("= %d", noval.replaced), verdict(noval.paidB == noval.replaced)},
		{"resync", "  … stale objects, of all checked", fmt.Sprintf("%d of %d", noval.stale, noval.checked), "", "0", verdict(noval.stale == 0 && noval.checked > 0)},
		{"resync", "  … throughput (every line downloads its image)", fmt.Sprintf("%.1f req/s", noval.rpsB), fmt.Sprintf("%.2f", noval.rpsB/base.rps), "", ""},
	}
	return rows, nil
}

// resyncOrigin serves the catalogue's photos at /img/N.png; a replaced
// photo gets other bytes behind the same URL. With validators, an ETag and
// Last-Modified per version, and 304s; without, neither.
type resyncOrigin struct {
	mu         sync.Mutex
	version    map[int]int
	bytes      map[string][]byte // by "n/version"
	validators bool
	requests   int
}

func (o *resyncOrigin) current(n int) []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.photo(n, o.version[n])
}

// photo is image n at version v; o.mu held.
func (o *resyncOrigin) photo(n, v int) []byte {
	k := fmt.Sprintf("%d/%d", n, v)
	b, ok := o.bytes[k]
	if !ok {
		b = catalogueImage(n + 7919*v)
		o.bytes[k] = b
	}
	return b
}

func (o *resyncOrigin) replace(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.version[n]++
}

func (o *resyncOrigin) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.requests
}

func (o *resyncOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/img/"), ".png"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	o.mu.Lock()
	v := o.version[n]
	b := o.photo(n, v)
	if n < freshImages {
		o.requests++ // the catalogue's, not the new listings'
	}
	o.mu.Unlock()
	if o.validators {
		etag := fmt.Sprintf(`"%d-%d"`, n, v)
		w.Header().Set("ETag", etag)
		w.Header().Set("Last-Modified", time.Date(2026, 12, 1, 0, v, 0, 0, time.UTC).Format(http.TimeFormat))
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// freshImages numbers the new listings' photos, apart from the catalogue's.
const freshImages = 100000

type resyncSpec struct {
	crops, n   int
	fresh      int     // new listings submitted right behind the first re-sync
	replaced   float64 // share of photos replaced before a second re-sync (0: none)
	validators bool
	copyLoop   int // copies of the bare CopyObject loop (0: none)
	extra      []string
}

type resyncRun struct {
	rps, rpsB      float64
	paidA, paidB   int
	freshDone      time.Duration
	replaced       int
	stale, checked int
	copyRate       float64
	originPerLine  float64
}

func runResync(ctx context.Context, env *benchEnv, bin string, o options, spec resyncSpec, say func(string, ...any)) (res resyncRun, err error) {
	origin := &resyncOrigin{version: map[int]int{}, bytes: map[string][]byte{}, validators: spec.validators}
	f, err := launchFleet(ctx, env, bin, fleetSpec{q: o.resyncQ, pods: o.resyncPods, concurrency: o.resyncConcurrency, images: origin,
		cropCache: 4096, bucket: fmt.Sprintf("bench-resync-%d", time.Now().UnixNano()),
		extra: append([]string{"CROPQ_DEDUP_SCOPE=tenant"}, spec.extra...)})
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := f.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	st := records.NewStore(f.rdb, status.Config{})
	line := func(prefix string, i, img int) tasks.Request {
		return tasks.Request{RequestID: fmt.Sprintf("%s-%05d", prefix, i), ImageURL: fmt.Sprintf("%s/img/%d.png", f.images, img),
			Params: tasks.Params{TargetWidth: 300, TargetHeight: 300, BatchID: prefix}}
	}
	submit := func(prefix string, n int, img func(i int) int) error {
		for i := 0; i < n; i += 500 {
			var reqs []tasks.Request
			for j := i; j < min(i+500, n); j++ {
				reqs = append(reqs, line(prefix, j, img(j)))
			}
			if err := checkResults(f.prod.EnqueueBatch(ctx, reqs)); err != nil {
				return err
			}
		}
		return nil
	}
	// The stored crops: paid for once each.
	say("  seeding %d crops at Q…", spec.crops)
	if err := submit("seed", spec.crops, func(i int) int { return i }); err != nil {
		return res, err
	}
	if _, err := awaitBatch(ctx, f, "seed", 15*time.Minute); err != nil {
		return res, err
	}

	// The re-sync, and new listings right behind it.
	say("  re-sync…")
	originBefore := origin.count()
	start := time.Now()
	if err := submit("resync-a", spec.n, func(i int) int { return i % spec.crops }); err != nil {
		return res, err
	}
	var freshAt time.Time
	freshDone := make(chan time.Time, 1)
	freshErr := make(chan error, 1)
	if spec.fresh > 0 {
		freshAt = time.Now()
		if err := submit("new", spec.fresh, func(i int) int { return freshImages + i }); err != nil {
			return res, err
		}
		go func() {
			at, err := awaitBatch(ctx, f, "new", 15*time.Minute)
			freshDone <- at
			freshErr <- err
		}()
	}
	end, err := awaitBatch(ctx, f, "resync-a", 30*time.Minute)
	if err != nil {
		return res, err
	}
	res.rps = float64(spec.n) / end.Sub(start).Seconds()
	res.originPerLine = float64(origin.count()-originBefore) / float64(spec.n)
	if spec.fresh > 0 {
		at := <-freshDone
		if err := <-freshErr; err != nil {
			return res, err
		}
		res.freshDone = at.Sub(freshAt)
	}
	if res.paidA, _, err = paidOf(ctx, st, "resync-a", spec.n); err != nil {
		return res, err
	}
	if spec.copyLoop > 0 {
		say("  bare CopyObject loop…")
		if res.copyRate, err = copyLoop(ctx, f, st, spec.copyLoop, o.resyncPods*o.resyncConcurrency); err != nil {
			return res, err
		}
	}
	if spec.replaced <= 0 {
		return res, nil
	}

	// Photos replaced behind the same URLs, and the re-sync again.
	every := int(1 / spec.replaced)
	for n := 0; n < spec.crops; n += every {
		origin.replace(n)
		res.replaced++
	}
	say("  %d photos replaced; re-sync again…", res.replaced)
	start = time.Now()
	if err := submit("resync-b", spec.n, func(i int) int { return i % spec.crops }); err != nil {
		return res, err
	}
	if end, err = awaitBatch(ctx, f, "resync-b", 30*time.Minute); err != nil {
		return res, err
	}
	res.rpsB = float64(spec.n) / end.Sub(start).Seconds()
	var recs []status.Record
	if res.paidB, recs, err = paidOf(ctx, st, "resync-b", spec.n); err != nil {
		return res, err
	}
	say("  checking every stored object against a fresh crop of its current image…")
	res.stale, res.checked, err = staleObjects(ctx, f, origin, recs, spec.crops)
	return res, err
}

// awaitBatch waits until every request of a batch is terminal, and
// returns when it saw that.
func awaitBatch(ctx context.Context, f *fleet, batch string, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		bi, err := f.prod.Batch(ctx, "", batch)
		if err == nil && bi.Done {
			if bi.Counts[status.Failed] > 0 {
				return time.Now(), fmt.Errorf("batch %s: %d failed", batch, bi.Counts[status.Failed])
			}
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("batch %s not done after %s", batch, timeout)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// paidOf reads the records prefix-00000… and sums their paid calls.
func paidOf(ctx context.Context, st *records.Store, prefix string, n int) (int, []status.Record, error) {
	var all []status.Record
	paid := 0
	for i := 0; i < n; i += 1000 {
		var ids []string
		for j := i; j < min(i+1000, n); j++ {
			ids = append(ids, fmt.Sprintf("%s-%05d", prefix, j))
		}
		recs, err := st.GetMany(ctx, ids)
		if err != nil {
			return 0, nil, err
		}
		if len(recs) != len(ids) {
			return 0, nil, fmt.Errorf("%s: %d of %d records", prefix, len(recs), len(ids))
		}
		for _, r := range recs {
			paid += r.PaidCalls
		}
		all = append(all, recs...)
	}
	return paid, all, nil
}

// staleObjects compares each record's stored object with the crop an
// emulator of its own (no quota, not billed to the fleet) makes of the
// image behind its URL now.
func staleObjects(ctx context.Context, f *fleet, origin *resyncOrigin, recs []status.Record, crops int) (stale, checked int, err error) {
	emu, err := cropapitest.New(cropapitest.Config{AppKey: benchKey, AppSecret: benchSecret, Rate: 1000})
	if err != nil {
		return 0, 0, err
	}
	srv := httptest.NewServer(emu)
	defer srv.Close()
	client, err := cropapi.NewClient(cropapi.Config{BaseURL: srv.URL, AppKey: benchKey, AppSecret: benchSecret})
	if err != nil {
		return 0, 0, err
	}
	want := make([]string, crops)
	for n := range crops {
		r, err := client.Crop(ctx, cropapi.Request{ImageBase64: base64.StdEncoding.EncodeToString(origin.current(n)), TargetWidth: 300, TargetHeight: 300})
		if err != nil {
			return 0, 0, fmt.Errorf("fresh crop of image %d: %w", n, err)
		}
		if want[n], err = digestOf(ctx, func(ctx context.Context) (io.ReadCloser, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.ImageURL, nil)
			if err != nil {
				return nil, err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return nil, err
			}
			return resp.Body, nil
		}); err != nil {
			return 0, 0, err
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	var firstErr error
	for i, rec := range recs {
		img := i % crops
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			got := ""
			var err error
			if rec.Stored != nil {
				got, err = digestOf(ctx, func(ctx context.Context) (io.ReadCloser, error) {
					obj, err := f.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(rec.Stored.Key)})
					if err != nil {
						return nil, err
					}
					return obj.Body, nil
				})
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			checked++
			if got != want[img] {
				stale++
			}
		}()
	}
	wg.Wait()
	return stale, checked, firstErr
}

func digestOf(ctx context.Context, open func(context.Context) (io.ReadCloser, error)) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	body, err := open(ctx)
	if err != nil {
		return "", err
	}
	defer body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, body); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyLoop copies a stored crop n times server-side with conc goroutines,
// as bare as S3 allows (no HEAD, no condition): the ceiling of a reuse.
func copyLoop(ctx context.Context, f *fleet, st *records.Store, n, conc int) (float64, error) {
	rec, err := st.Get(ctx, "seed-00000")
	if err != nil {
		return 0, err
	}
	src := aws.String(f.bucket + "/" + rec.Stored.Key)
	var next int
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n || firstErr != nil {
					return
				}
				_, err := f.s3.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(fmt.Sprintf("copy-loop/%d.png", i)), CopySource: src})
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds(), firstErr
}
