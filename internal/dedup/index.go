package dedup

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/lock"
	"github.com/cropq/cropq/internal/rediskey"
)

// Result is a stored object a crop key led to: the result of the request
// that paid for it.
type Result struct {
	RequestID    string // the request that paid
	Bucket, Key  string
	ETag         string
	ContentType  string
	Size         int64
	Width        int
	Height       int
	APIRequestID string
	At           time.Time // when it was stored
	// Tenant is the paying request's tenant (its effective one: "default"
	// for none); "" in entries written before tenants were recorded.
	Tenant string
	// Source identifies the bytes that were cropped (a URL image under
	// SourceValidators): checked again before the result is reused.
	Source Validators
}

// Version names the result paid for by requestID under a crop key
// without naming the request (it may be another tenant's): the objects
// copied from it carry it, so that a destination already holding this very
// crop is told apart from an older one of the same key.
func Version(key, requestID string) string {
	sum := sha256.Sum256([]byte(key + sep + requestID))
	return hex.EncodeToString(sum[:8])
}

// sep separates the fields of an index entry: none of them can hold it
// (request ids, buckets, keys from templates, ETags, content types).
const sep = "\x1f"

// encode is the compact form of r kept in Redis (a key holds one string).
// The tenant, then the source's validators, came last, so entries written
// before them decode too.
func (r Result) encode() string {
	src := r.Source
	src.ETag, src.LastModified = clean(src.ETag), clean(src.LastModified)
	return strings.Join(append([]string{r.RequestID, r.Bucket, r.Key, r.ETag, r.ContentType, strconv.FormatInt(r.Size, 10),
		strconv.Itoa(r.Width), strconv.Itoa(r.Height), r.APIRequestID, strconv.FormatInt(r.At.UnixMilli(), 10), r.Tenant}, src.encode()...), sep)
}

func decode(s string) (Result, error) {
	f := strings.Split(s, sep)
	if len(f) == 10 {
		f = append(f, "") // written before the tenant was: unknown
	}
	if len(f) == 11 {
		f = append(f, "", "", "0", "") // written before validators were: unknown (revalidation pays again)
	}
	if len(f) != 15 {
		return Result{}, fmt.Errorf("dedup: index entry has %d fields, want 15", len(f))
	}
	src, err := decodeValidators(f[11:15])
	if err != nil {
		return Result{}, err
	}
	size, err1 := strconv.ParseInt(f[5], 10, 64)
	w, err2 := strconv.Atoi(f[6])
	h, err3 := strconv.Atoi(f[7])
	at, err4 := strconv.ParseInt(f[9], 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Result{}, fmt.Errorf("dedup: index entry: %w", err)
	}
	return Result{RequestID: f[0], Bucket: f[1], Key: f[2], ETag: f[3], ContentType: f[4], Size: size, Width: w, Height: h,
		APIRequestID: f[8], At: time.UnixMilli(at), Tenant: f[10], Source: src}, nil
}

// Foreign reports whether r was paid for by another tenant than tenant's
// request (see Keyer.Foreign).
func (x *Index) Foreign(r Result, tenant string) bool { return x.cfg.Keyer.Foreign(r, tenant) }

// refPrefix starts a reference to a request (see Conceal): '/' is in no
// request id, so a reference is never taken for one.
const refPrefix = "ref/"

func (x *Index) refKey(ref string) string { return x.keys().DedupRef(ref) }

// Conceal returns an opaque reference to requestID, the request that paid
// for a result another tenant reuses: "ref/" and 20 random hex digits,
// which tell nothing of the request (not even which of several it is).
// Resolve names the request again, for the index's TTL.
func (x *Index) Conceal(ctx context.Context, requestID string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	var b [10]byte
	_, _ = rand.Read(b[:])
	ref := refPrefix + hex.EncodeToString(b[:])
	if err := x.rdb.Set(ctx, x.refKey(ref), requestID, x.cfg.TTL).Err(); err != nil {
		return "", fmt.Errorf("dedup: conceal: %w", err)
	}
	return ref, nil
}

// Resolve returns the request a reference of Conceal stands for; found
// false when ref is none, or has expired.
func (x *Index) Resolve(ctx context.Context, ref string) (requestID string, found bool, err error) {
	if !IsRef(ref) {
		return "", false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	id, err := x.rdb.Get(ctx, x.refKey(ref)).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("dedup: resolve: %w", err)
	}
	return id, true, nil
}

// IsRef reports whether s has the form of a reference of Conceal.
func IsRef(s string) bool {
	h, ok := strings.CutPrefix(s, refPrefix)
	if !ok || len(h) != 20 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}

// Config configures an Index. Zero values take defaults.
type Config struct {
	// Prefix of every key (default "cropq:"): entries live at
	// Prefix+"dedup:{KEY}", claims at Prefix+"dedup:{KEY}:lease" (package
	// rediskey).
	Prefix string
	// TTL of an index entry after its result was stored (default 30 days,
	// CROPQ_DEDUP_TTL).
	TTL time.Duration
	// ClaimTTL is how long a claim on a key lives without being renewed
	// (default 10s): how long twins wait for a worker that died mid-call.
	// Its holder renews it every third of that while it works.
	ClaimTTL time.Duration
	Keyer
}

// Index maps crop keys to stored results, and hands out claims on keys.
type Index struct {
	rdb redis.UniversalClient
	cfg Config
}

// DefaultTTL is how long an index entry lives (Config.TTL's default).
const DefaultTTL = 30 * 24 * time.Hour

// New returns an index on rdb.
func New(rdb redis.UniversalClient, cfg Config) *Index {
	if cfg.Prefix == "" {
		cfg.Prefix = string(rediskey.Default)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.ClaimTTL <= 0 {
		cfg.ClaimTTL = 10 * time.Second
	}
	return &Index{rdb: rdb, cfg: cfg}
}

// redisTimeout bounds each of the index's Redis calls: the index is an
// optimisation, never worth a stuck attempt.
const redisTimeout = 5 * time.Second

// EntryKey is the Redis key of key's index entry (its memory is measured
// in the tests).
func (x *Index) EntryKey(key string) string { return x.keys().DedupEntry(key) }

// claimLock is the lock of key's claim.
func (x *Index) claimLock(key string) lock.Lock { return lock.New(x.rdb, x.keys().DedupClaim(key)) }

func (x *Index) savedKey() string { return x.keys().DedupSaved() }

func (x *Index) keys() rediskey.Prefix { return rediskey.Prefix(x.cfg.Prefix) }

// Lookup returns the result stored under key, if any.
func (x *Index) Lookup(ctx context.Context, key string) (Result, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	s, err := x.rdb.Get(ctx, x.EntryKey(key)).Result()
	if errors.Is(err, redis.Nil) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, fmt.Errorf("dedup: lookup: %w", err)
	}
	r, err := decode(s)
	if err != nil {
		return Result{}, false, err
	}
	return r, true, nil
}

// Remember records r under key for the index's TTL.
func (x *Index) Remember(ctx context.Context, key string, r Result) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	if err := x.rdb.Set(ctx, x.EntryKey(key), r.encode(), x.cfg.TTL).Err(); err != nil {
		return fmt.Errorf("dedup: remember: %w", err)
	}
	return nil
}

// Forget removes key's entry while it still names requestID's result (its
// object was deleted): a newer entry is left alone.
func (x *Index) Forget(ctx context.Context, key, requestID string) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	if err := forgetScript.Run(ctx, x.rdb, []string{x.EntryKey(key)}, requestID+sep).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("dedup: forget: %w", err)
	}
	return nil
}

var forgetScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// CountSaved adds one paid call saved, by reason (reused, coalesced), to
// the fleet's tally (cropq status --quota).
func (x *Index) CountSaved(ctx context.Context, reason string) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	if err := x.rdb.HIncrBy(ctx, x.savedKey(), reason, 1).Err(); err != nil {
		return fmt.Errorf("dedup: count saved: %w", err)
	}
	return nil
}

// Saved returns the fleet's paid calls saved, by reason.
func (x *Index) Saved(ctx context.Context) (map[string]int64, error) {
	m, err := x.rdb.HGetAll(ctx, x.savedKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("dedup: saved: %w", err)
	}
	out := map[string]int64{}
	for k, v := range m {
		n, err := strconv.ParseInt(v, 10, 64)
		if err == nil {
			out[k] = n
		}
	}
	return out, nil
}

// Claim is a dedup claim: a crop key held by one request while it pays for
// the key's result, so that its twins wait rather than pay too (a lock,
// package lock, renewed in the background until Release). It is neither a
// crop lease (package lease) nor the feeder's leadership lock.
type Claim struct {
	x     *Index
	key   string
	owner string
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// Acquire takes the claim on key for owner (a request id). When another
// holds it, the claim is nil and holder names it.
func (x *Index) Acquire(ctx context.Context, key, owner string) (c *Claim, holder string, err error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	// The nonce tells this attempt from a stale one of the same request.
	token := owner + "/" + hex.EncodeToString(nonce[:])
	res, err := x.claimLock(key).Acquire(ctx, token, x.cfg.ClaimTTL)
	if err != nil {
		return nil, "", fmt.Errorf("dedup: claim: %w", err)
	}
	if res != token {
		h, _, _ := strings.Cut(res, "/")
		return nil, h, nil
	}
	c = &Claim{x: x, key: key, owner: token, stop: make(chan struct{}), done: make(chan struct{})}
	go c.renew()
	return c, "", nil
}

// renew keeps the claim alive until Release; a worker that dies stops
// renewing, and the claim expires within ClaimTTL.
func (c *Claim) renew() {
	defer close(c.done)
	t := time.NewTicker(c.x.cfg.ClaimTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), c.x.cfg.ClaimTTL/3)
			// A failed renewal is retried on the next tick; a claim lost
			// meanwhile costs at most one extra paid call by a twin.
			_, _ = c.x.claimLock(c.key).Renew(ctx, c.owner, c.x.cfg.ClaimTTL)
			cancel()
		}
	}
}

// Release stops renewing and gives the key up, so that a twin waiting for
// it pays (when this request did not store a result) or reuses the result
// (when it did). Safe to call more than once.
func (c *Claim) Release(ctx context.Context) {
	c.once.Do(func() {
		close(c.stop)
		<-c.done
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisTimeout)
		defer cancel()
		// Left to expire if Redis is away.
		_ = c.x.claimLock(c.key).Release(ctx, c.owner)
	})
}
