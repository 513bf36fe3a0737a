package dedup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"

	"github.com/cropq/cropq/internal/netguard"
)

// FetchConfig configures a Fetcher. Zero values take defaults.
type FetchConfig struct {
	// MaxBytes bounds a download (default 24 MiB: the largest image the
	// API takes as base64). A larger image is keyed by its URL.
	MaxBytes int64
	// Timeout bounds one download (default 20s).
	Timeout time.Duration
	// AllowPrivate lets downloads reach loopback and private addresses
	// (CROPQ_ALLOW_PRIVATE_IMAGE_URLS, for the local emulator); otherwise
	// they are refused when the connection is made, whatever DNS answers.
	AllowPrivate bool
}

// Fetcher downloads URL images to key them by their bytes
// (CROPQ_DEDUP_FETCH): a download is far cheaper than a paid call, and it
// catches the same image under different URLs.
type Fetcher struct {
	client *http.Client
	cfg    FetchConfig
}

// NewFetcher returns a Fetcher.
func NewFetcher(cfg FetchConfig) *Fetcher {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 24 << 20
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 20 * time.Second
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	if !cfg.AllowPrivate {
		// Checked on the address actually dialled, so a DNS answer cannot
		// point the worker at its own network.
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			if netguard.Blocked(ap.Addr().WithZone("").Unmap()) {
				return fmt.Errorf("dedup: address %s is not allowed", ap.Addr())
			}
			return nil
		}
	}
	t := &http.Transport{DialContext: d.DialContext, ResponseHeaderTimeout: 10 * time.Second, MaxIdleConnsPerHost: 8,
		TLSHandshakeTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment}
	return &Fetcher{cfg: cfg, client: &http.Client{Transport: t, Timeout: cfg.Timeout,
		CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("more than 3 redirects")
			}
			return nil
		}}}
}

// Digest downloads rawURL and returns the SHA-256 (hex) of its bytes.
func (f *Fetcher) Digest(ctx context.Context, rawURL string) (string, error) {
	resp, err := f.get(ctx, rawURL, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("dedup: fetch: HTTP %d", resp.StatusCode)
	}
	return f.hash(resp)
}

// stripQuery keeps a URL's query (it may hold a signature) out of errors.
func stripQuery(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
