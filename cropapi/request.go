package cropapi

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"github.com/cropq/cropq/internal/imageformat"
	"github.com/cropq/cropq/internal/netguard"
)

// Request is one crop call.
type Request struct {
	// ImageURL is an absolute http(s) URL of the source image.
	ImageURL string
	// ImageBase64 is the source image, base64 (standard alphabet). When both
	// are set, the API prefers ImageBase64, and so only it is sent.
	ImageBase64 string
	// TargetWidth and TargetHeight are the size of the result in pixels.
	TargetWidth  int
	TargetHeight int
}

// Limits are the input rules. The vendor's reference contradicts itself
// (100–3000 px for URLs, 512–3000 px for base64, and elsewhere 100–5000 px for
// both), so they are configuration; DefaultLimits holds the strictest reading,
// because a call the API refuses is wasted.
type Limits struct {
	MinTarget int // smallest targetWidth/targetHeight
	MaxTarget int // largest targetWidth/targetHeight

	// MinBase64Side and MaxBase64Side bound each side of a base64 image.
	MinBase64Side int
	MaxBase64Side int
	// MaxBase64Len bounds the encoded length of ImageBase64.
	MaxBase64Len int

	// MinURLSide and MaxURLSide bound each side of a URL image. The client
	// cannot check them without fetching the image; the emulator does.
	MinURLSide int
	MaxURLSide int
	// MaxURLLen bounds the length of ImageURL.
	MaxURLLen int
	// AllowPrivateHosts accepts an imageUrl whose host is localhost or a
	// loopback, private, link-local or other internal address (any spelling
	// netguard.CheckHost refuses): the local emulator and tests serve images
	// there; the real API cannot fetch them.
	AllowPrivateHosts bool
}

// DefaultLimits are the reference's values, strictest reading.
func DefaultLimits() Limits {
	return Limits{
		MinTarget:     100,
		MaxTarget:     5000,
		MinBase64Side: 512,
		MaxBase64Side: 3000,
		MaxBase64Len:  32 << 20,
		MinURLSide:    100,
		MaxURLSide:    3000,
		MaxURLLen:     4096,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MinTarget == 0 {
		l.MinTarget = d.MinTarget
	}
	if l.MaxTarget == 0 {
		l.MaxTarget = d.MaxTarget
	}
	if l.MinBase64Side == 0 {
		l.MinBase64Side = d.MinBase64Side
	}
	if l.MaxBase64Side == 0 {
		l.MaxBase64Side = d.MaxBase64Side
	}
	if l.MaxBase64Len == 0 {
		l.MaxBase64Len = d.MaxBase64Len
	}
	if l.MinURLSide == 0 {
		l.MinURLSide = d.MinURLSide
	}
	if l.MaxURLSide == 0 {
		l.MaxURLSide = d.MaxURLSide
	}
	if l.MaxURLLen == 0 {
		l.MaxURLLen = d.MaxURLLen
	}
	return l
}

// Validate checks r against the limits (zero fields take DefaultLimits) and
// returns a *ValidationError naming the field and the limit, or nil.
//
// For base64 input it decodes the whole string (so a corrupt tail is caught)
// but reads only the image header for the size, so an image that claims
// 100,000×100,000 costs nothing to refuse.
func (l Limits) Validate(r Request) error {
	l = l.withDefaults()
	if err := l.checkTarget("targetWidth", r.TargetWidth); err != nil {
		return err
	}
	if err := l.checkTarget("targetHeight", r.TargetHeight); err != nil {
		return err
	}
	switch {
	case r.ImageBase64 != "":
		_, err := l.CheckBase64(r.ImageBase64)
		return err
	case r.ImageURL != "":
		return l.CheckURL(r.ImageURL)
	default:
		return &ValidationError{Field: "imageUrl", Reason: "one of imageUrl or imageBase64 is required"}
	}
}

// ValidateTargets checks only the target size (for requests whose image is
// checked elsewhere, e.g. stored by a producer and validated then).
func (l Limits) ValidateTargets(w, h int) error {
	l = l.withDefaults()
	if err := l.checkTarget("targetWidth", w); err != nil {
		return err
	}
	return l.checkTarget("targetHeight", h)
}

func (l Limits) checkTarget(field string, v int) error {
	if v < l.MinTarget || v > l.MaxTarget {
		return &ValidationError{Field: field, Reason: fmt.Sprintf("must be between %d and %d pixels, got %d", l.MinTarget, l.MaxTarget, v)}
	}
	return nil
}

// CheckURL checks that s is an absolute http(s) URL of acceptable length
// whose host can be canonicalised and, unless AllowPrivateHosts, is not
// localhost or an internal address in any spelling (netguard.CheckHost).
func (l Limits) CheckURL(s string) error {
	l = l.withDefaults()
	if len(s) > l.MaxURLLen {
		return &ValidationError{Field: "imageUrl", Reason: fmt.Sprintf("must be at most %d characters, got %d", l.MaxURLLen, len(s))}
	}
	u, err := url.Parse(s)
	if err != nil {
		return &ValidationError{Field: "imageUrl", Reason: "is not a valid URL"}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return &ValidationError{Field: "imageUrl", Reason: fmt.Sprintf("must be an absolute http or https URL, got scheme %q", u.Scheme)}
	}
	if u.Host == "" {
		return &ValidationError{Field: "imageUrl", Reason: "must be an absolute URL with a host"}
	}
	if u.User != nil {
		return &ValidationError{Field: "imageUrl", Reason: "must not carry credentials"}
	}
	if !ValidPort(u.Port()) {
		return &ValidationError{Field: "imageUrl", Reason: fmt.Sprintf("port %q must be 1–65535", u.Port())}
	}
	// Judge the host as the fetching client will see it (0x7f.1 and
	// ⓛⓞⓒⓐⓛⓗⓞⓢⓣ are loopback too). A host no client can make sense of is
	// refused even when private hosts are allowed.
	host := u.Hostname()
	if _, err := netguard.Canonical(host); err != nil {
		return &ValidationError{Field: "imageUrl", Reason: err.Error()}
	}
	if !l.AllowPrivateHosts {
		if err := netguard.CheckHost(host); err != nil {
			return &ValidationError{Field: "imageUrl", Reason: err.Error() + ": the API cannot fetch it"}
		}
	}
	return nil
}

// ValidPort reports whether a URL's port ("" for the scheme's) is 1–65535.
func ValidPort(p string) bool {
	if p == "" {
		return true
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// ImageInfo is what an image header tells.
type ImageInfo struct {
	Format        string // jpeg, png, gif, bmp, webp
	Width, Height int
}

// CheckBase64 decodes s and checks the image's format and size.
func (l Limits) CheckBase64(s string) (ImageInfo, error) {
	l = l.withDefaults()
	if len(s) > l.MaxBase64Len {
		return ImageInfo{}, &ValidationError{Field: "imageBase64", Reason: fmt.Sprintf("must be at most %d bytes of base64, got %d", l.MaxBase64Len, len(s))}
	}
	enc := base64.StdEncoding
	if !strings.HasSuffix(s, "=") && len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	// Read the header from one decoder, then make sure the whole string decodes.
	info, err := DecodeImageHeader(base64.NewDecoder(enc, strings.NewReader(s)))
	if err != nil {
		if _, derr := io.Copy(io.Discard, base64.NewDecoder(enc, strings.NewReader(s))); derr != nil {
			return ImageInfo{}, &ValidationError{Field: "imageBase64", Reason: "is not valid base64"}
		}
		return ImageInfo{}, &ValidationError{Field: "imageBase64", Reason: err.Error()}
	}
	if _, err := io.Copy(io.Discard, base64.NewDecoder(enc, strings.NewReader(s))); err != nil {
		return ImageInfo{}, &ValidationError{Field: "imageBase64", Reason: "is not valid base64"}
	}
	if err := l.checkSides("imageBase64", info, l.MinBase64Side, l.MaxBase64Side); err != nil {
		return ImageInfo{}, err
	}
	return info, nil
}

// CheckImageSize checks the size of a fetched URL image (used by servers,
// which can see it).
func (l Limits) CheckImageSize(field string, info ImageInfo) error {
	l = l.withDefaults()
	return l.checkSides(field, info, l.MinURLSide, l.MaxURLSide)
}

func (l Limits) checkSides(field string, info ImageInfo, lo, hi int) error {
	if info.Width < lo || info.Height < lo || info.Width > hi || info.Height > hi {
		return &ValidationError{Field: field, Reason: fmt.Sprintf("image must be between %d×%d and %d×%d pixels, got %d×%d", lo, lo, hi, hi, info.Width, info.Height)}
	}
	return nil
}

// DecodeImageHeader sniffs the format from the magic bytes and reads only the
// header. It does not depend on image.RegisterFormat side effects.
func DecodeImageHeader(r io.Reader) (ImageInfo, error) {
	var head [16]byte
	n, _ := io.ReadFull(r, head[:])
	format, ok := imageformat.Sniff(head[:n])
	if !ok {
		return ImageInfo{}, fmt.Errorf("is not a JPEG, PNG, WebP, GIF or BMP image")
	}
	cfg, err := format.DecodeConfig(io.MultiReader(bytes.NewReader(head[:n]), r))
	if err != nil {
		return ImageInfo{}, fmt.Errorf("has a corrupt %s header", format.Name)
	}
	return ImageInfo{Format: format.Name, Width: cfg.Width, Height: cfg.Height}, nil
}
