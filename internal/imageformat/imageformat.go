// Package imageformat holds, once, the image formats cropq takes and
// stores — JPEG, PNG, WebP, GIF and BMP: each one's name (as the standard
// library's image package and the emulator name it), the extension of its
// files and object keys, its content type, its magic bytes and its
// decoders. The decoders are called directly, never through
// image.RegisterFormat side effects.
package imageformat

import (
	"bytes"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"path/filepath"
	"strings"

	"golang.org/x/image/bmp"
	"golang.org/x/image/webp"
)

// The formats' names.
const (
	JPEG = "jpeg"
	PNG  = "png"
	GIF  = "gif"
	WebP = "webp"
	BMP  = "bmp"
)

// Format is one image format.
type Format struct {
	Name        string // JPEG, PNG…
	Ext         string // of files and object keys, without the dot: "jpg" for JPEG
	ContentType string // "image/jpeg"

	extAlias     string // another extension its files go by: "jpeg"
	magic        func(head []byte) bool
	decode       func(io.Reader) (image.Image, error)
	decodeConfig func(io.Reader) (image.Config, error)
}

// All is every format, in the order a check of each one's object key
// goes through them.
func All() []Format {
	return []Format{
		{Name: PNG, Ext: "png", ContentType: "image/png", magic: prefix("\x89PNG\r\n\x1a\n"), decode: png.Decode, decodeConfig: png.DecodeConfig},
		{Name: JPEG, Ext: "jpg", extAlias: "jpeg", ContentType: "image/jpeg", magic: prefix("\xff\xd8\xff"), decode: jpeg.Decode, decodeConfig: jpeg.DecodeConfig},
		{Name: GIF, Ext: "gif", ContentType: "image/gif", magic: prefix("GIF87a", "GIF89a"), decode: gif.Decode, decodeConfig: gif.DecodeConfig},
		{Name: WebP, Ext: "webp", ContentType: "image/webp", magic: isWebP, decode: webp.Decode, decodeConfig: webp.DecodeConfig},
		{Name: BMP, Ext: "bmp", ContentType: "image/bmp", magic: prefix("BM"), decode: bmp.Decode, decodeConfig: bmp.DecodeConfig},
	}
}

// Sniff tells the format from an image's first bytes (16 are enough).
func Sniff(head []byte) (Format, bool) {
	return find(func(f Format) bool { return f.magic(head) })
}

// ByName is the format of a name (JPEG, PNG…).
func ByName(name string) (Format, bool) {
	return find(func(f Format) bool { return f.Name == name })
}

// ByContentType is the format of a media type without parameters
// ("image/jpeg").
func ByContentType(mediaType string) (Format, bool) {
	return find(func(f Format) bool { return f.ContentType == mediaType })
}

// ByFileName is the format a file's extension names, in any case:
// photo.JPG and photo.jpeg are JPEG.
func ByFileName(name string) (Format, bool) {
	ext := strings.ToLower(strings.TrimPrefix(filepath.Ext(name), "."))
	return find(func(f Format) bool { return ext != "" && (f.Ext == ext || f.extAlias == ext) })
}

// Decode decodes a whole image of this format.
func (f Format) Decode(r io.Reader) (image.Image, error) { return f.decode(r) }

// DecodeConfig reads only the header of an image of this format.
func (f Format) DecodeConfig(r io.Reader) (image.Config, error) { return f.decodeConfig(r) }

func find(match func(Format) bool) (Format, bool) {
	for _, f := range All() {
		if match(f) {
			return f, true
		}
	}
	return Format{}, false
}

func prefix(magics ...string) func([]byte) bool {
	return func(b []byte) bool {
		for _, m := range magics {
			if bytes.HasPrefix(b, []byte(m)) {
				return true
			}
		}
		return false
	}
}

func isWebP(b []byte) bool {
	return len(b) >= 12 && bytes.Equal(b[:4], []byte("RIFF")) && bytes.Equal(b[8:12], []byte("WEBP"))
}
