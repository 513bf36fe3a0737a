package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// Dedup finds results already paid for under a request's crop key, and
// lets one of several twins in flight pay (package dedup's Index).
type Dedup interface {
	// Key is the request's crop key, "" when its results are not reused
	// (scope off, or dedup: false); with an error beside a key, the key is
	// still usable (a CROPQ_DEDUP_FETCH download failed: the URL's key).
	Key(ctx context.Context, p tasks.CropPayload) (string, error)
	Lookup(ctx context.Context, key string) (dedup.Result, bool, error)
	Remember(ctx context.Context, key string, r dedup.Result) error
	// Forget drops key's entry while it names requestID's result.
	Forget(ctx context.Context, key, requestID string) error
	// Acquire takes the claim on key; nil and the holder when taken.
	Acquire(ctx context.Context, key, owner string) (KeyClaim, string, error)
	CountSaved(ctx context.Context, reason string) error
	// Foreign reports whether r was paid for by another tenant than
	// tenant (dedup.Keyer.Foreign): its request is then not named.
	Foreign(r dedup.Result, tenant string) bool
	// Conceal returns an opaque reference to requestID that operators
	// resolve (dedup.Index.Conceal).
	Conceal(ctx context.Context, requestID string) (string, error)
	// HintKey is the crop key known without reaching the origin
	// (dedup.Keyer.HintKey): the source's identity whatever its bytes.
	HintKey(p tasks.CropPayload) (string, error)
	// Revalidate checks, before r is reused for p, that the bytes behind
	// p's URL are those r was cropped from (CROPQ_DEDUP_SOURCE=validators).
	Revalidate(ctx context.Context, p tasks.CropPayload, r dedup.Result) (dedup.Check, error)
	// SourceValidators are p's image's validators, recorded with the
	// result about to be paid for.
	SourceValidators(ctx context.Context, p tasks.CropPayload) (dedup.Validators, error)
}

// KeyClaim is a crop key held while its result is paid for (*dedup.Claim).
type KeyClaim interface {
	Release(ctx context.Context)
}

// RedisDedup adapts package dedup's Index to Dedup (nil to nil).
func RedisDedup(x *dedup.Index) Dedup {
	if x == nil {
		return nil
	}
	return redisDedup{x}
}

type redisDedup struct{ *dedup.Index }

func (d redisDedup) Acquire(ctx context.Context, key, owner string) (KeyClaim, string, error) {
	l, holder, err := d.Index.Acquire(ctx, key, owner)
	if l == nil {
		return nil, holder, err // a nil interface, not a nil *dedup.Claim in one
	}
	return l, holder, err
}

// StoredCopier copies an object stored for another request, server-side
// (package storage's Copier); a *results.MissingError when it is gone.
type StoredCopier interface {
	CopyStored(ctx context.Context, from results.Stored, obj results.Object) (results.Stored, error)
	// Holds reports whether obj's destination already holds exactly
	// obj's crop (results.Copier.Holds).
	Holds(ctx context.Context, obj results.Object, contentType string) (results.Stored, bool, error)
}

// Reasons of cropq_api_calls_saved_total.
const (
	SavedReused    = "reused"    // a result stored earlier
	SavedCoalesced = "coalesced" // a twin's result, waited for while it was paid
	SavedUnchanged = "unchanged" // the destination already held the crop: nothing copied or written
)

// CoalescingError hands a task back while a twin request (same crop key)
// holds the key's claim and pays: its next attempt reuses the result, or
// pays itself if the twin failed or died. Not a failure.
type CoalescingError struct {
	Holder string // the twin's request id
	// Foreign: the twin is (or may be) another tenant's, whose request id
	// the message, which goes into the record, does not name.
	Foreign bool
	RetryIn time.Duration
}

func (e *CoalescingError) Error() string {
	if e.Foreign {
		return "another request is paying for the same crop; waiting for its result"
	}
	return fmt.Sprintf("request %s is paying for the same crop; waiting for its result", e.Holder)
}

// concealedError is err told without what it says of another tenant's
// request (its id, its object's key) in its message, which goes into the
// record; errors.As still finds what err wraps.
type concealedError struct {
	msg string
	err error
}

func (e *concealedError) Error() string { return e.msg }
func (e *concealedError) Unwrap() error { return e.err }

// claim is what step 2a leaves to the rest of the attempt: the crop key
// (and the source's identity, hint), the claim when this request is the
// one that pays, and the source's validators read before paying.
type claim struct {
	key, hint string
	held      KeyClaim
	source    dedup.Validators
}

// crop names the crop a's result is, on its stored object.
func (c *claim) crop(requestID string) results.Crop {
	if c == nil {
		return results.Crop{}
	}
	return results.Crop{Key: c.key, Source: c.hint, Version: dedup.Version(c.key, requestID)}
}

func (c *claim) release(ctx context.Context) {
	if c != nil && c.held != nil {
		c.held.Release(ctx)
	}
}

// reuseOrCoalesce is step 2a of ProcessTask. It reports done when the
// attempt ended here, with ProcessTask's return value: the request
// succeeded with a copy of a stored result, or was handed back to wait for
// a twin in flight. Otherwise the attempt pays, holding the key's claim
// when it got it. Any failure of the index itself only means paying: it is
// an optimisation, never a reason to fail.
func (h *Handler) reuseOrCoalesce(ctx context.Context, a attempt, rec status.Record) (c *claim, done bool, err error) {
	d := h.cfg.Dedup
	if d == nil || h.cfg.Reuse == nil {
		return nil, false, nil
	}
	key, err := d.Key(ctx, a.payload)
	if err != nil {
		a.log.WarnContext(ctx, "crop: crop key", "err", err)
	}
	if key == "" {
		return nil, false, nil
	}
	c = &claim{key: key, hint: key}
	if hint, herr := d.HintKey(a.payload); herr == nil && hint != "" {
		c.hint = hint
	}
	if rec.Checkpoint.Usable() {
		return c, false, nil // already paid for: store it, then index it
	}
	// Handed back for a twin before: what it saves is coalesced.
	waited := slices.ContainsFunc(rec.History, func(t status.Transition) bool { return t.ErrorCode == string(CodeCoalescing) })
	deadline := h.cfg.Now().Add(h.cfg.CoalesceWait)
	gone := ""
	for {
		res, found, err := d.Lookup(ctx, key)
		if err != nil {
			a.log.WarnContext(ctx, "crop: dedup index unreadable; paying", "err", err)
			return c, false, nil
		}
		if found && res.RequestID != a.payload.RequestID && res.RequestID != gone {
			if h.revalidate(ctx, a, res) {
				done, err := h.reuse(ctx, a, c, res, waited)
				if done {
					return nil, true, err
				}
			}
			// Gone, or cropped from other bytes than those now behind the
			// URL: paid for again, and the entry replaced.
			gone = res.RequestID
		}
		held, holder, err := d.Acquire(ctx, key, a.payload.RequestID)
		if err != nil {
			a.log.WarnContext(ctx, "crop: dedup claim unavailable; paying", "err", err)
			return c, false, nil
		}
		if held != nil {
			// A holder may have stored its result and let go between the
			// look above and this claim: look again, now that no one else
			// can be storing one.
			if res, found, err := d.Lookup(ctx, key); err == nil && found && res.RequestID != a.payload.RequestID && res.RequestID != gone {
				held.Release(ctx)
				continue
			}
			c.held = held
			return c, false, nil
		}
		if holder == a.payload.RequestID {
			// Left by an earlier attempt of this request (its worker died):
			// pay without it.
			return c, false, nil
		}
		waited = true
		if !h.cfg.Now().Before(deadline) {
			// Not holding a worker slot for the twin's whole call: back in
			// the queue, unpaid and not a failure.
			a.log.InfoContext(ctx, "crop: a twin is paying for the same crop; handing back", "twin", holder)
			return nil, true, h.fail(ctx, a, &CoalescingError{Holder: holder, Foreign: h.foreignTwin(ctx, holder, a.payload.EffectiveTenant()),
				RetryIn: h.cfg.CoalesceDelay})
		}
		t := time.NewTimer(h.cfg.CoalescePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, true, h.fail(ctx, a, ctx.Err())
		case <-t.C:
		}
	}
}

// revalidate reports whether res may be reused for a: the bytes behind
// a's URL are still those res was cropped from (one conditional request to
// the origin under CROPQ_DEDUP_SOURCE=validators; nothing to ask in the
// other modes). Anything short of a clear "unchanged" pays again: a paid
// call costs little next to a stale crop served for a month.
func (h *Handler) revalidate(ctx context.Context, a attempt, res dedup.Result) bool {
	start := h.cfg.Now()
	chk, err := h.cfg.Dedup.Revalidate(ctx, a.payload, res)
	if chk.Outcome != "" {
		h.cfg.Metrics.Revalidated(chk.Outcome, h.cfg.Now().Sub(start))
	}
	switch {
	case err != nil:
		a.log.WarnContext(ctx, "crop: the source could not be revalidated; paying rather than reusing", "reused_from", res.RequestID, "err", err)
		return false
	case !chk.Unchanged:
		a.log.InfoContext(ctx, "crop: the image behind the URL changed since its stored crop; paying again", "stored_by", res.RequestID, "outcome", chk.Outcome)
		return false
	}
	return true
}

// foreignTwin reports whether the request holding a crop key's claim is
// (or may be: its record unreadable) another tenant's.
func (h *Handler) foreignTwin(ctx context.Context, holder, tenant string) bool {
	rec, err := h.status.Get(ctx, holder)
	if err != nil {
		return true
	}
	return h.cfg.Dedup.Foreign(dedup.Result{Tenant: cmp.Or(rec.Tenant, tasks.DefaultTenant)}, tenant)
}

// reuse copies res's object to this request's destination (server-side)
// and records the request succeeded without a paid call. It reports done
// false when the object is gone (deleted by hand, replaced): the entry is
// forgotten and the request pays.
func (h *Handler) reuse(ctx context.Context, a attempt, c *claim, res dedup.Result, waited bool) (bool, error) {
	p, key := a.payload, c.key
	obj := results.Object{RequestID: p.RequestID, APIRequestID: res.APIRequestID, Width: p.TargetWidth, Height: p.TargetHeight,
		Tenant: p.Tenant, Bucket: p.Bucket, KeyTemplate: p.KeyTemplate, Metadata: p.Metadata,
		Crop: results.Crop{Key: key, Source: c.hint, Version: dedup.Version(key, res.RequestID)}}
	// A re-sync to the same key: the destination may hold this very crop
	// already, and then there is nothing to copy or write.
	if held, ok, err := h.cfg.Reuse.Holds(ctx, obj, res.ContentType); err != nil {
		a.log.WarnContext(ctx, "crop: look at the destination", "err", err)
	} else if ok {
		return true, h.unchanged(ctx, a, res, held)
	}
	// A copy into a bucket that is failing would fail too: wait for it as a
	// paid crop would (the storage gate; a request's own bucket is checked),
	// rather than spend retries.
	if err := h.storageReady(ctx, a, false); err != nil {
		return true, h.fail(ctx, a, err)
	}
	stored, err := h.cfg.Reuse.CopyStored(ctx,
		results.Stored{Bucket: res.Bucket, Key: res.Key, ETag: res.ETag, ContentType: res.ContentType, Size: res.Size}, obj)
	if a.gated() {
		h.gate.observe(ctx, err)
	}
	var missing *results.MissingError
	if errors.As(err, &missing) {
		a.log.InfoContext(ctx, "crop: the stored result to reuse is gone; paying", "reused_from", res.RequestID, "err", err)
		if ferr := h.cfg.Dedup.Forget(ctx, key, res.RequestID); ferr != nil {
			a.log.WarnContext(ctx, "crop: forget a gone result", "err", ferr)
		}
		return false, nil
	}
	// Another tenant's request is named to operators only (the logs, and a
	// reference they resolve), never in this request's record.
	foreign := h.cfg.Dedup.Foreign(res, p.EffectiveTenant())
	if err != nil {
		err = fmt.Errorf("reuse the result of %s: %w", res.RequestID, err)
		if foreign {
			a.log.WarnContext(ctx, "crop: copy another tenant's stored result", "reused_from", res.RequestID, "err", err)
			err = &concealedError{msg: "reuse a stored result of another request: the copy failed", err: err}
		}
		return true, h.fail(ctx, a, err)
	}
	from := res.RequestID
	if foreign {
		if from, err = h.cfg.Dedup.Conceal(ctx, res.RequestID); err != nil {
			// The copy is there; the next attempt copies it again, unpaid.
			return true, h.fail(ctx, a, err)
		}
	}
	var done status.Record
	err = h.persist(ctx, time.Time{}, func() error {
		var err error
		done, err = h.status.Transition(ctx, p.RequestID, a.by().Reuse(status.Stored{Bucket: stored.Bucket, Key: stored.Key, ETag: stored.ETag, Size: stored.Size, ContentType: stored.ContentType,
			Width: res.Width, Height: res.Height, APIRequestID: res.APIRequestID}, from))
		return err
	})
	if err != nil {
		// The copy is there; the next attempt copies it again, still unpaid.
		return true, h.fail(ctx, a, fmt.Errorf("mark succeeded: %w", err))
	}
	reason := SavedReused
	if waited {
		reason = SavedCoalesced
	}
	h.cfg.Metrics.CallSaved(reason)
	if err := h.cfg.Dedup.CountSaved(ctx, reason); err != nil {
		a.log.WarnContext(ctx, "crop: count a saved call", "err", err)
	}
	a.log.InfoContext(ctx, "crop: stored a copy of an earlier result, unpaid", "reused_from", res.RequestID, "reused_ref", from, "reason", reason,
		"bucket", stored.Bucket, "key", stored.Key)
	h.removeInput(ctx, a)
	h.cfg.Metrics.Finished(string(status.Succeeded), "")
	h.notify(ctx, a, done)
	return true, nil
}

// unchanged records a request whose destination already held its crop
// (res's, at held): succeeded, with nothing copied or written.
func (h *Handler) unchanged(ctx context.Context, a attempt, res dedup.Result, held results.Stored) error {
	p := a.payload
	from := res.RequestID
	if h.cfg.Dedup.Foreign(res, p.EffectiveTenant()) {
		var err error
		if from, err = h.cfg.Dedup.Conceal(ctx, res.RequestID); err != nil {
			return h.fail(ctx, a, err)
		}
	}
	var done status.Record
	err := h.persist(ctx, time.Time{}, func() error {
		var err error
		done, err = h.status.Transition(ctx, p.RequestID, a.by().Unchanged(status.Stored{Bucket: held.Bucket, Key: held.Key, ETag: held.ETag,
			Size: held.Size, ContentType: held.ContentType, Width: res.Width, Height: res.Height, APIRequestID: res.APIRequestID}, from))
		return err
	})
	if err != nil {
		return h.fail(ctx, a, fmt.Errorf("mark succeeded: %w", err))
	}
	h.cfg.Metrics.CallSaved(SavedUnchanged)
	if err := h.cfg.Dedup.CountSaved(ctx, SavedUnchanged); err != nil {
		a.log.WarnContext(ctx, "crop: count a saved call", "err", err)
	}
	a.log.InfoContext(ctx, "crop: the destination already holds this crop; nothing to do", "bucket", held.Bucket, "key", held.Key, "stored_by", from)
	h.removeInput(ctx, a)
	h.cfg.Metrics.Finished(string(status.Succeeded), "")
	h.notify(ctx, a, done)
	return nil
}

// recordSource reads the validators of the source about to be paid for,
// to keep with its index entry; a failure only means the next reuse pays
// again (an entry that knows nothing of its bytes is never reused under
// CROPQ_DEDUP_SOURCE=validators).
func (h *Handler) recordSource(ctx context.Context, a attempt, c *claim) {
	if c == nil || h.cfg.Dedup == nil || c.source.Known() {
		return
	}
	v, err := h.cfg.Dedup.SourceValidators(ctx, a.payload)
	if err != nil {
		a.log.WarnContext(ctx, "crop: read the source's validators; its result will not be reused", "err", err)
		return
	}
	c.source = v
}

// remember indexes the result this attempt paid for and stored, before its
// claim is released, so that twins waiting for it find it.
func (h *Handler) remember(ctx context.Context, a attempt, c *claim, rec status.Record) {
	if c == nil || rec.Stored == nil {
		return
	}
	st := rec.Stored
	r := dedup.Result{RequestID: rec.RequestID, Bucket: st.Bucket, Key: st.Key, ETag: st.ETag,
		ContentType: st.ContentType, Size: st.Size, Width: st.Width, Height: st.Height, APIRequestID: st.APIRequestID, At: h.cfg.Now(),
		Tenant: a.payload.EffectiveTenant(), Source: c.source}
	if err := h.cfg.Dedup.Remember(ctx, c.key, r); err != nil {
		// Twins pay for their own; nothing is lost.
		a.log.WarnContext(ctx, "crop: index the stored result", "err", err)
	}
	if c.hint != "" && c.hint != c.key {
		// Keyed by its bytes: indexed under its URL's key too, so that the
		// feeder sees, without a download, a request likely to need no call.
		if err := h.cfg.Dedup.Remember(ctx, c.hint, r); err != nil {
			a.log.WarnContext(ctx, "crop: index the stored result under its URL", "err", err)
		}
	}
}
