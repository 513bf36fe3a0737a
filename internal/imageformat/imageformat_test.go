package imageformat_test

import (
	"bytes"
	"image"
	"image/jpeg"
	"image/png"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/imageformat"
)

func TestFormatsNamesExtensionsAndContentTypes(t *testing.T) {
	var got [][3]string
	for _, f := range imageformat.All() {
		got = append(got, [3]string{f.Name, f.Ext, f.ContentType})
		byType, ok := imageformat.ByContentType(f.ContentType)
		require.True(t, ok)
		assert.Equal(t, f.Name, byType.Name)
		byName, ok := imageformat.ByName(f.Name)
		require.True(t, ok)
		assert.Equal(t, f.Ext, byName.Ext)
	}
	assert.Equal(t, [][3]string{
		{"png", "png", "image/png"},
		{"jpeg", "jpg", "image/jpeg"},
		{"gif", "gif", "image/gif"},
		{"webp", "webp", "image/webp"},
		{"bmp", "bmp", "image/bmp"},
	}, got)
	_, ok := imageformat.ByContentType("image/tiff")
	assert.False(t, ok)
	_, ok = imageformat.ByName("tiff")
	assert.False(t, ok)
}

func TestByFileName(t *testing.T) {
	for name, want := range map[string]string{
		"a.jpg": "jpeg", "a.JPEG": "jpeg", "dir/b.png": "png", "c.Gif": "gif", "d.webp": "webp", "e.bmp": "bmp",
		"f.tiff": "", "jpg": "", "g.": "", "h": "",
	} {
		f, ok := imageformat.ByFileName(name)
		assert.Equal(t, want != "", ok, name)
		assert.Equal(t, want, f.Name, name)
	}
}

func TestSniffAndDecode(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 3, 2))
	var pngBytes, jpegBytes bytes.Buffer
	require.NoError(t, png.Encode(&pngBytes, img))
	require.NoError(t, jpeg.Encode(&jpegBytes, img, nil))
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"png", pngBytes.Bytes(), "png"},
		{"jpeg", jpegBytes.Bytes(), "jpeg"},
		{"gif87a", []byte("GIF87a...."), "gif"},
		{"gif89a", []byte("GIF89a...."), "gif"},
		{"webp", []byte("RIFF\x00\x00\x00\x00WEBPVP8 "), "webp"},
		{"bmp", []byte("BM\x00\x00"), "bmp"},
		{"riff, not webp", []byte("RIFF\x00\x00\x00\x00WAVE"), ""},
		{"text", []byte("hello"), ""},
		{"empty", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, ok := imageformat.Sniff(tc.data)
			assert.Equal(t, tc.want != "", ok)
			assert.Equal(t, tc.want, f.Name)
		})
	}
	for _, data := range [][]byte{pngBytes.Bytes(), jpegBytes.Bytes()} {
		f, ok := imageformat.Sniff(data)
		require.True(t, ok)
		cfg, err := f.DecodeConfig(bytes.NewReader(data))
		require.NoError(t, err)
		assert.Equal(t, [2]int{3, 2}, [2]int{cfg.Width, cfg.Height}, f.Name)
		decoded, err := f.Decode(bytes.NewReader(data))
		require.NoError(t, err)
		assert.Equal(t, img.Bounds(), decoded.Bounds(), f.Name)
	}
}
