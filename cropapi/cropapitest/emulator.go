// Package cropapitest is the emulator, the test double of package cropapi:
// the local stand-in of the Image Cropping API, a real HTTP server that
// implements the API's contract so that the dev stack (cropq-dev), the tests
// and the benchmarks run offline, while production points the same client at
// the real domain. It is never the real, paid API, and never linked into the
// production binary (cmd/cropq).
//
// What it implements:
//
//   - POST /rest/ai/image/cropping (and GET with the body's fields as query
//     parameters): v2 signature, app key and timestamp window checked at the
//     gateway (HTTP 200 with a gateway error body, as the vendor does);
//     a quota shared by all callers (resCode 501, or HTTP 429 at the gateway);
//     the API's input rules (resCode 700 naming the field); real
//     content-aware cropping (smartcrop) resized to exactly the target size;
//     the reference's success envelope.
//   - GET /oss/<object>?OSSAccessKeyId=…&Expires=…&Signature=…: the result,
//     OSS-style presigned and refused with 403 once expired or tampered.
//   - GET /_emulator/stats, POST /_emulator/reset, PUT /_emulator/faults:
//     counters of what was served and billed, and fault injection at run time.
package cropapitest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/cropq/cropq/cropapi"
)

// Config configures the emulator. Zero values take defaults.
type Config struct {
	// AppKey and AppSecret are the only accepted credentials.
	AppKey, AppSecret string
	// TimestampWindow is the accepted clock skew of a call's timestamp
	// (default 15m; the vendor's is not published).
	TimestampWindow time.Duration
	// Limits are the input rules (zero: cropapi.DefaultLimits()).
	Limits cropapi.Limits
	// Rate is the quota shared by all callers, in requests per second
	// (default 5, the vendor's default for this API); Burst its bucket
	// (default: Rate rounded up).
	Rate  float64
	Burst int
	// RateLimit429 answers over-quota calls with HTTP 429 at the gateway
	// instead of resCode 501.
	RateLimit429 bool
	// ResultTTL is the lifetime of result URLs (default 1h).
	ResultTTL time.Duration
	// MaxStoredBytes bounds the results held in memory (default 512 MiB);
	// the oldest go first.
	MaxStoredBytes int64
	// FetchTimeout and MaxFetchBytes bound the download of an imageUrl
	// (default 20s and 32 MiB).
	FetchTimeout  time.Duration
	MaxFetchBytes int64
	// HTTPClient fetches imageUrl (default: one with FetchTimeout).
	HTTPClient *http.Client
	// CropCache memoizes this many crops by (source digest, target size), so
	// that benchmarks measure the pipeline rather than the emulator's CPU
	// (0: every call crops). The answers are the same either way.
	CropCache int
	Faults    Faults
	Logger    *slog.Logger
	// Seed seeds the fault dice (0: random).
	Seed int64
	Now  func() time.Time
}

// Faults are injected failures; all zero means a well-behaved API.
type Faults struct {
	// Probabilities of answering that resCode instead of cropping (not billed).
	P500  float64 `json:"p500"`
	P501  float64 `json:"p501"` // a rate-limit answer whatever the quota
	P801  float64 `json:"p801"`
	P900  float64 `json:"p900"`
	P1001 float64 `json:"p1001"`
	P1002 float64 `json:"p1002"`
	// Latency is added to every API call, ± a uniform LatencyJitter.
	Latency       time.Duration `json:"latency"`
	LatencyJitter time.Duration `json:"latencyJitter"`
	// PTruncate is the probability that a result download is cut short.
	PTruncate float64 `json:"pTruncate"`
	// SlowDownload spreads each result download over this long.
	SlowDownload time.Duration `json:"slowDownload"`
	// SensitiveMarker in an imageUrl is answered resCode 1000 (default "sensitive").
	SensitiveMarker string `json:"sensitiveMarker"`
}

// Stats count what the emulator served.
type Stats struct {
	// Calls by outcome: a resCode ("200", "501", "700"…), a gateway code
	// ("IncompleteSignature"…) or "http_429".
	Calls map[string]int64 `json:"calls"`
	// Usage is what successful calls billed.
	Usage int64 `json:"usage"`
	// Result downloads: served whole, refused as expired or forged, cut short.
	Downloads          int64 `json:"downloads"`
	DownloadsExpired   int64 `json:"downloadsExpired"`
	DownloadsTruncated int64 `json:"downloadsTruncated"`
	// FirstSuccess and LastSuccess bound the period billed calls were
	// answered in (zero before the first): goodput is Usage over it.
	FirstSuccess time.Time `json:"firstSuccess,omitzero"`
	LastSuccess  time.Time `json:"lastSuccess,omitzero"`
	// StoredResults and StoredBytes are the results held now.
	StoredResults int   `json:"storedResults"`
	StoredBytes   int64 `json:"storedBytes"`
}

// Server is the emulator. It is an http.Handler, safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	limiter *rate.Limiter
	results *resultStore
	crops   chan struct{} // bounds concurrent crops to the CPUs
	memo    *cropMemo     // nil unless Config.CropCache > 0
	ossID   string
	ossKey  []byte
	mux     *http.ServeMux

	mu     sync.Mutex // guards faults, rng, stats
	faults Faults
	rng    *mrand.Rand
	stats  Stats
}

// New returns an emulator accepting cfg's credentials.
func New(cfg Config) (*Server, error) {
	if cfg.AppKey == "" || cfg.AppSecret == "" {
		return nil, errors.New("emulator: app key and secret are required")
	}
	// The stand-in fetches images where the tests and the dev stack serve
	// them: on this machine.
	cfg.Limits.AllowPrivateHosts = true
	if cfg.TimestampWindow <= 0 {
		cfg.TimestampWindow = 15 * time.Minute
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 5
	}
	if cfg.Burst <= 0 {
		cfg.Burst = int(math.Ceil(cfg.Rate))
	}
	if cfg.ResultTTL <= 0 {
		cfg.ResultTTL = time.Hour
	}
	if cfg.MaxStoredBytes <= 0 {
		cfg.MaxStoredBytes = 512 << 20
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 20 * time.Second
	}
	if cfg.MaxFetchBytes <= 0 {
		cfg.MaxFetchBytes = 32 << 20
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: cfg.FetchTimeout}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Faults.SensitiveMarker == "" {
		cfg.Faults.SensitiveMarker = "sensitive"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	seed := uint64(cfg.Seed)
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     log.With("component", "emulator"),
		limiter: rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst),
		results: newResultStore(cfg.MaxStoredBytes),
		crops:   make(chan struct{}, cropSlots()),
		memo:    newCropMemo(cfg.CropCache),
		ossID:   "LTAIemulator" + hex.EncodeToString(key[:4]),
		ossKey:  key,
		faults:  cfg.Faults,
		rng:     mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		stats:   Stats{Calls: map[string]int64{}},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+cropapi.APIPath, s.handleCrop)
	mux.HandleFunc("GET "+cropapi.APIPath, s.handleCrop)
	mux.HandleFunc("GET /oss/", s.handleResult)
	mux.HandleFunc("GET /_emulator/stats", s.handleStats)
	mux.HandleFunc("POST /_emulator/reset", s.handleReset)
	mux.HandleFunc("PUT /_emulator/faults", s.handleFaults)
	s.mux = mux
	return s, nil
}

// Banner is the line to show wherever the emulator runs.
const Banner = "LOCAL STAND-IN of the Image Cropping API (cropq-dev emulator), not the real paid API"

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	out := s.stats
	out.Calls = make(map[string]int64, len(s.stats.Calls))
	for k, v := range s.stats.Calls {
		out.Calls[k] = v
	}
	s.mu.Unlock()
	out.StoredResults, out.StoredBytes = s.results.size()
	return out
}

// Reset zeroes the counters.
func (s *Server) Reset() {
	s.mu.Lock()
	s.stats = Stats{Calls: map[string]int64{}}
	s.mu.Unlock()
}

// SetFaults replaces the injected faults.
func (s *Server) SetFaults(f Faults) {
	if f.SensitiveMarker == "" {
		f.SensitiveMarker = "sensitive"
	}
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

func (s *Server) currentFaults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// roll returns true with probability p.
func (s *Server) roll(p float64) bool {
	if p <= 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64() < p
}

func (s *Server) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Duration(s.rng.Int64N(int64(2*d)+1)) - d
}

func (s *Server) count(outcome string, usage int) {
	s.mu.Lock()
	s.stats.Calls[outcome]++
	s.stats.Usage += int64(usage)
	if usage > 0 {
		now := s.cfg.Now()
		if s.stats.FirstSuccess.IsZero() {
			s.stats.FirstSuccess = now
		}
		s.stats.LastSuccess = now
	}
	s.mu.Unlock()
}

func (s *Server) countDownload(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

func (s *Server) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Server) handleReset(w http.ResponseWriter, _ *http.Request) {
	s.Reset()
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Server) handleFaults(w http.ResponseWriter, r *http.Request) {
	var f Faults
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.SetFaults(f)
	writeJSON(w, http.StatusOK, s.currentFaults())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// newID returns a vendor-looking request id.
func newID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// hostOf is the scheme and host the caller used, so result URLs download
// from wherever the emulator was reached.
func hostOf(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + strings.TrimSpace(r.Host)
}
