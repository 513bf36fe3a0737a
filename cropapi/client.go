package cropapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cropq/cropq/internal/redact"

	"github.com/cropq/cropq/cropapi/internal/wire"
)

// DefaultBaseURL is the API's domain for global accounts.
const DefaultBaseURL = "https://api.aidc-ai.com"

// APIPath is the path of the cropping API: "/rest" followed by the API name.
const APIPath = "/rest/ai/image/cropping"

// Config configures a Client. Zero values take the defaults given.
type Config struct {
	// BaseURL is scheme and host (default DefaultBaseURL); point it at the
	// emulator for local runs.
	BaseURL string
	// AppKey and AppSecret are the account's credentials. The secret is only
	// ever used as an HMAC key and never appears in errors or logs.
	AppKey    string
	AppSecret string
	// Trial sends "x-iop-trial: true", drawing on the account's free quota.
	Trial bool
	// Timeout bounds one call, from connect to the last byte (default 60s).
	Timeout time.Duration
	// MaxResponseBytes bounds the body read (default 1 MiB).
	MaxResponseBytes int64
	// Limits are the input rules checked before any call.
	Limits Limits
	// HTTPClient sends the calls (default: a client with sane transport
	// timeouts). Its own Timeout is not relied on; Config.Timeout is.
	HTTPClient *http.Client
	// Now returns the time used for the signature timestamp (default time.Now).
	Now func() time.Time
}

// Client calls the cropping API. It is safe for concurrent use.
type Client struct {
	cfg      Config
	endpoint string
}

// DefaultTimeout bounds one API call (Config.Timeout's default).
const DefaultTimeout = 60 * time.Second

// NewClient's errors for a Config without credentials.
var (
	ErrNoAppKey    = errors.New("cropapi: Config.AppKey is required")
	ErrNoAppSecret = errors.New("cropapi: Config.AppSecret is required")
)

// NewClient checks cfg and returns a client.
func NewClient(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("cropapi: base URL %q must be an absolute http(s) URL", cfg.BaseURL)
	}
	if cfg.AppKey == "" {
		return nil, ErrNoAppKey
	}
	if cfg.AppSecret == "" {
		return nil, ErrNoAppSecret
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 1 << 20
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: defaultTransport()}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{cfg: cfg, endpoint: strings.TrimRight(cfg.BaseURL, "/") + APIPath}, nil
}

func defaultTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.ResponseHeaderTimeout = 60 * time.Second
	return t
}

// Limits returns the input rules the client enforces.
func (c *Client) Limits() Limits { return c.cfg.Limits }

// wireRequest is the JSON body; the samples send numbers as strings.
type wireRequest struct {
	ImageURL     string `json:"imageUrl,omitempty"`
	ImageBase64  string `json:"imageBase64,omitempty"`
	TargetWidth  string `json:"targetWidth"`
	TargetHeight string `json:"targetHeight"`
}

// Crop validates req, calls the API once and returns the result or a
// classified error (see ClassOf). It never retries: retry policy belongs to
// the caller, who knows what a call costs.
func (c *Client) Crop(ctx context.Context, req Request) (Result, error) {
	if err := c.cfg.Limits.Validate(req); err != nil {
		return Result{}, err
	}
	body := wireRequest{
		TargetWidth:  strconv.Itoa(req.TargetWidth),
		TargetHeight: strconv.Itoa(req.TargetHeight),
	}
	if req.ImageBase64 != "" {
		body.ImageBase64 = req.ImageBase64 // preferred by the API: send only it
	} else {
		body.ImageURL = req.ImageURL
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return Result{}, fmt.Errorf("cropapi: encode request: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	ts := wire.Timestamp(c.cfg.Now())
	q := url.Values{}
	q.Set("partner_id", wire.PartnerID)
	q.Set("sign_method", wire.SignMethod)
	q.Set("sign_ver", wire.SignVer)
	q.Set("app_key", c.cfg.AppKey)
	q.Set("timestamp", ts)
	q.Set("sign", wire.Sign(c.cfg.AppSecret, ts))
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint+"?"+q.Encode(), bytes.NewReader(payload))
	if err != nil {
		return Result{}, fmt.Errorf("cropapi: build request: %w", err)
	}
	httpReq.Header.Set("Content-Type", "application/json")
	httpReq.Header.Set("Accept", "application/json")
	if c.cfg.Trial {
		httpReq.Header.Set("x-iop-trial", "true")
	}

	resp, err := c.cfg.HTTPClient.Do(httpReq)
	if err != nil {
		return Result{}, &TransportError{Op: "send", Err: redact.Error(err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxResponseBytes+1))
	if err != nil {
		return Result{}, &TransportError{Op: "read body", StatusCode: resp.StatusCode, Err: redact.Error(err)}
	}
	if int64(len(raw)) > c.cfg.MaxResponseBytes {
		return Result{}, &TransportError{Op: "read body", StatusCode: resp.StatusCode, Err: fmt.Errorf("body larger than %d bytes", c.cfg.MaxResponseBytes)}
	}
	return DecodeResponse(resp.StatusCode, resp.Header, raw)
}
