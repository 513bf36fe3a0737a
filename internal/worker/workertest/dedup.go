package workertest

import (
	"context"
	"fmt"
	"sync"

	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/internal/worker"
	"github.com/cropq/cropq/tasks"
)

// Dedup is an in-memory result-reuse index (worker.Dedup): crop keys are
// computed by a real dedup.Keyer; entries and key claims live in maps and
// never expire.
type Dedup struct {
	// Keyer computes crop keys (default: global scope, no fetching).
	Keyer dedup.Keyer

	mu      sync.Mutex
	entries map[string]dedup.Result
	holders map[string]*KeyClaim
	saved   map[string]int
	refs    map[string]string // reference → request id
}

// NewDedup returns an empty index with global scope.
func NewDedup() *Dedup {
	return &Dedup{Keyer: dedup.Keyer{Scope: dedup.ScopeGlobal},
		entries: map[string]dedup.Result{}, holders: map[string]*KeyClaim{}, saved: map[string]int{}, refs: map[string]string{}}
}

// Key is p's crop key (see dedup.Keyer).
func (d *Dedup) Key(ctx context.Context, p tasks.CropPayload) (string, error) {
	return d.Keyer.Key(ctx, p)
}

// HintKey is p's crop key known without reaching the origin (see
// dedup.Keyer.HintKey).
func (d *Dedup) HintKey(p tasks.CropPayload) (string, error) { return d.Keyer.HintKey(p) }

// Revalidate asks the origin whether the bytes behind p's URL are those r
// was cropped from, as package dedup's Index does (with the Keyer's
// Fetcher; unchanged without one).
func (d *Dedup) Revalidate(ctx context.Context, p tasks.CropPayload, r dedup.Result) (dedup.Check, error) {
	if !d.Keyer.Revalidates(p) {
		return dedup.Check{Unchanged: true}, nil
	}
	return d.Keyer.Fetch.Revalidate(ctx, p.ImageURL, r.Source)
}

// SourceValidators are the validators of p's image, as package dedup's
// Index reads them.
func (d *Dedup) SourceValidators(ctx context.Context, p tasks.CropPayload) (dedup.Validators, error) {
	if !d.Keyer.Revalidates(p) {
		return dedup.Validators{}, nil
	}
	return d.Keyer.Fetch.Validators(ctx, p.ImageURL)
}

// Lookup returns the result stored under key.
func (d *Dedup) Lookup(_ context.Context, key string) (dedup.Result, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.entries[key]
	return r, ok, nil
}

// Remember stores r under key.
func (d *Dedup) Remember(_ context.Context, key string, r dedup.Result) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.entries[key] = r
	return nil
}

// Forget drops key's entry while it names requestID's result.
func (d *Dedup) Forget(_ context.Context, key, requestID string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.entries[key].RequestID == requestID {
		delete(d.entries, key)
	}
	return nil
}

// KeyClaim is a crop key held by one request (worker.KeyClaim).
type KeyClaim struct {
	d          *Dedup
	key, owner string
}

// Acquire takes key's claim for owner; when another holds it, nil and the
// holder.
func (d *Dedup) Acquire(_ context.Context, key, owner string) (worker.KeyClaim, string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h := d.holders[key]; h != nil {
		return nil, h.owner, nil
	}
	l := &KeyClaim{d: d, key: key, owner: owner}
	d.holders[key] = l
	return l, "", nil
}

// Hold makes owner (a twin request) hold key's claim, as if it were paying
// for the key's result on another worker.
func (d *Dedup) Hold(key, owner string) *KeyClaim {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := &KeyClaim{d: d, key: key, owner: owner}
	d.holders[key] = l
	return l
}

// Release gives the key up, if this claim still holds it.
func (l *KeyClaim) Release(context.Context) {
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	if l.d.holders[l.key] == l {
		delete(l.d.holders, l.key)
	}
}

// CountSaved counts a paid call saved for reason.
func (d *Dedup) CountSaved(_ context.Context, reason string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.saved[reason]++
	return nil
}

// Saved is how many calls were saved for reason (worker.SavedReused,
// worker.SavedCoalesced).
func (d *Dedup) Saved(reason string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.saved[reason]
}

// Entry is the result indexed under key.
func (d *Dedup) Entry(key string) (dedup.Result, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.entries[key]
	return r, ok
}

// Holder is the request holding key's claim, "" when none.
func (d *Dedup) Holder(key string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h := d.holders[key]; h != nil {
		return h.owner
	}
	return ""
}

// Foreign reports whether r is another tenant's (see dedup.Keyer.Foreign).
func (d *Dedup) Foreign(r dedup.Result, tenant string) bool { return d.Keyer.Foreign(r, tenant) }

// Conceal returns a new reference to requestID, in dedup.Index.Conceal's
// form ("ref/" and 20 hex digits).
func (d *Dedup) Conceal(_ context.Context, requestID string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ref := fmt.Sprintf("ref/%020x", len(d.refs)+1)
	d.refs[ref] = requestID
	return ref, nil
}

// Resolve is the request a reference of Conceal stands for.
func (d *Dedup) Resolve(ref string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	id, ok := d.refs[ref]
	return id, ok
}
