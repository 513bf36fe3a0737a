package cropapi

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/image/bmp"
)

func encodeImage(t testing.TB, format string, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y += 7 {
		for x := 0; x < w; x += 5 {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 200, 255})
		}
	}
	var buf bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		err = jpeg.Encode(&buf, img, nil)
	case "gif":
		err = gif.Encode(&buf, img, nil)
	case "bmp":
		err = bmp.Encode(&buf, img)
	}
	require.NoError(t, err)
	return buf.Bytes()
}

// pngBomb is a valid PNG header claiming w×h pixels, with no image data.
func pngBomb(w, h uint32) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	_ = binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	_ = binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

// webpHeader is a minimal lossless (VP8L) WebP header for a w×h image.
func webpHeader(w, h int) []byte {
	bits := uint32(w-1) | uint32(h-1)<<14
	payload := []byte{0x2f, byte(bits), byte(bits >> 8), byte(bits >> 16), byte(bits >> 24)}
	var b bytes.Buffer
	b.WriteString("RIFF")
	_ = binary.Write(&b, binary.LittleEndian, uint32(4+8+len(payload)))
	b.WriteString("WEBPVP8L")
	_ = binary.Write(&b, binary.LittleEndian, uint32(len(payload)))
	b.Write(payload)
	return b.Bytes()
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestValidate(t *testing.T) {
	okPNG := b64(encodeImage(t, "png", 600, 520))
	tests := []struct {
		name   string
		req    Request
		field  string // "" = valid
		reason string // substring of the reason
	}{
		{"url ok", Request{ImageURL: "https://cdn.example.com/a.jpg", TargetWidth: 800, TargetHeight: 800}, "", ""},
		{"url with credentials", Request{ImageURL: "https://u:p@cdn.example.com/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "credentials"},
		{"url loopback", Request{ImageURL: "http://127.0.0.1:8080/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", `host "127.0.0.1" is a loopback address: the API cannot fetch it`},
		{"url localhost", Request{ImageURL: "http://localhost/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "loopback"},
		{"url private", Request{ImageURL: "http://10.1.2.3/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "private"},
		{"url link-local metadata", Request{ImageURL: "http://169.254.169.254/latest/meta-data", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "link-local"},
		{"url ipv6 loopback", Request{ImageURL: "http://[::1]/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "loopback"},
		// Other spellings of internal addresses (netguard has the full table).
		{"url hex loopback", Request{ImageURL: "http://0x7f.1/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", `host "0x7f.1" is 127.0.0.1, a loopback address`},
		{"url decimal loopback", Request{ImageURL: "http://2130706433:8080/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "is 127.0.0.1, a loopback address"},
		{"url octal loopback", Request{ImageURL: "http://0177.0.0.1/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "is 127.0.0.1"},
		{"url short private", Request{ImageURL: "http://10.1/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "is 10.0.0.1, a private address"},
		{"url zero", Request{ImageURL: "http://0/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "is 0.0.0.0"},
		{"url decimal metadata", Request{ImageURL: "http://2852039166/latest/meta-data", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "is 169.254.169.254, a cloud metadata address"},
		{"url mapped loopback", Request{ImageURL: "http://[::ffff:7f00:1]/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "reaches 127.0.0.1, a loopback address"},
		{"url link-local zone", Request{ImageURL: "http://[fe80::1%25eth0]/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "link-local"},
		{"url fullwidth loopback", Request{ImageURL: "http://１２７．０．０．１/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "is 127.0.0.1, a loopback address"},
		{"url ideographic stop", Request{ImageURL: "http://127。0。0。1/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "is 127.0.0.1"},
		{"url circled localhost", Request{ImageURL: "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "is localhost, a loopback name"},
		{"url upper localhost", Request{ImageURL: "http://LOCALHOST:8080/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "is localhost"},
		{"url localhost dot", Request{ImageURL: "http://localhost./a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "is localhost"},
		{"url under localhost", Request{ImageURL: "http://foo.localhost/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "under localhost"},
		{"url bad ipv4", Request{ImageURL: "http://1.2.3.256/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", `host "1.2.3.256" looks like an IPv4 address but is not a valid one`},
		{"url five parts", Request{ImageURL: "http://1.2.3.4.5/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "not a valid one"},
		{"url bad idna", Request{ImageURL: "http://bü\u200dcher.example/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "is not a valid internationalised domain name"},
		{"url percent-encoded circled localhost", Request{ImageURL: "http://%E2%93%9B%E2%93%9E%E2%93%92%E2%93%90%E2%93%9B%E2%93%97%E2%93%9E%E2%93%A2%E2%93%A3/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "is localhost, a loopback name"},
		{"url public ip", Request{ImageURL: "http://93.184.216.34/a.jpg", TargetWidth: 800, TargetHeight: 800}, "", ""},
		{"url public ipv6", Request{ImageURL: "https://[2606:4700::1111]/a.jpg", TargetWidth: 800, TargetHeight: 800}, "", ""},
		{"url idn", Request{ImageURL: "https://bücher.example/a.jpg", TargetWidth: 800, TargetHeight: 800}, "", ""},
		{"url idn percent-encoded", Request{ImageURL: "https://b%C3%BCcher.example/a.jpg", TargetWidth: 800, TargetHeight: 800}, "", ""},
		{"url file", Request{ImageURL: "file:///etc/passwd", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "scheme \"file\""},
		{"url gopher", Request{ImageURL: "gopher://cdn.example.com/a", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "scheme \"gopher\""},
		{"base64 png ok", Request{ImageBase64: okPNG, TargetWidth: 100, TargetHeight: 5000}, "", ""},
		{"base64 jpeg ok", Request{ImageBase64: b64(encodeImage(t, "jpeg", 512, 3000)), TargetWidth: 800, TargetHeight: 800}, "", ""},
		{"base64 gif ok", Request{ImageBase64: b64(encodeImage(t, "gif", 512, 512)), TargetWidth: 800, TargetHeight: 800}, "", ""},
		{"base64 bmp ok", Request{ImageBase64: b64(encodeImage(t, "bmp", 700, 512)), TargetWidth: 800, TargetHeight: 800}, "", ""},
		{"base64 webp ok", Request{ImageBase64: b64(webpHeader(1024, 768)), TargetWidth: 800, TargetHeight: 800}, "", ""},
		{"base64 unpadded ok", Request{ImageBase64: strings.TrimRight(okPNG, "="), TargetWidth: 800, TargetHeight: 800}, "", ""},
		{"base64 wins over bad url", Request{ImageURL: "ftp://x", ImageBase64: okPNG, TargetWidth: 800, TargetHeight: 800}, "", ""},
		{"width 99", Request{ImageURL: "https://e.com/a.jpg", TargetWidth: 99, TargetHeight: 800}, "targetWidth", "between 100 and 5000 pixels, got 99"},
		{"width 5001", Request{ImageURL: "https://e.com/a.jpg", TargetWidth: 5001, TargetHeight: 800}, "targetWidth", "got 5001"},
		{"height negative", Request{ImageURL: "https://e.com/a.jpg", TargetWidth: 800, TargetHeight: -1}, "targetHeight", "got -1"},
		{"height missing", Request{ImageURL: "https://e.com/a.jpg", TargetWidth: 800}, "targetHeight", "got 0"},
		{"neither source", Request{TargetWidth: 800, TargetHeight: 800}, "imageUrl", "one of imageUrl or imageBase64"},
		{"relative url", Request{ImageURL: "/a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "absolute http or https"},
		{"file url", Request{ImageURL: "file:///etc/passwd", TargetWidth: 800, TargetHeight: 800}, "imageUrl", `scheme "file"`},
		{"gopher url", Request{ImageURL: "gopher://e.com/", TargetWidth: 800, TargetHeight: 800}, "imageUrl", `scheme "gopher"`},
		{"no host", Request{ImageURL: "http:///a.jpg", TargetWidth: 800, TargetHeight: 800}, "imageUrl", "host"},
		{"huge url", Request{ImageURL: "https://e.com/" + strings.Repeat("a", 5000), TargetWidth: 800, TargetHeight: 800}, "imageUrl", "at most 4096"},
		{"not base64", Request{ImageBase64: "%%%not base64%%%", TargetWidth: 800, TargetHeight: 800}, "imageBase64", "not valid base64"},
		{"base64 corrupt tail", Request{ImageBase64: okPNG[:len(okPNG)-8] + "!!!!!!!!", TargetWidth: 800, TargetHeight: 800}, "imageBase64", "not valid base64"},
		{"base64 not image", Request{ImageBase64: b64([]byte("hello, this is plain text")), TargetWidth: 800, TargetHeight: 800}, "imageBase64", "not a JPEG, PNG, WebP, GIF or BMP"},
		{"base64 too small", Request{ImageBase64: b64(encodeImage(t, "png", 511, 600)), TargetWidth: 800, TargetHeight: 800}, "imageBase64", "between 512×512 and 3000×3000 pixels, got 511×600"},
		{"base64 too large", Request{ImageBase64: b64(encodeImage(t, "png", 3001, 600)), TargetWidth: 800, TargetHeight: 800}, "imageBase64", "got 3001×600"},
		{"decompression bomb", Request{ImageBase64: b64(pngBomb(100000, 100000)), TargetWidth: 800, TargetHeight: 800}, "imageBase64", "got 100000×100000"},
		{"corrupt header", Request{ImageBase64: b64([]byte("\x89PNG\r\n\x1a\nXXXXXXXXXXXXXXXXXXXX")), TargetWidth: 800, TargetHeight: 800}, "imageBase64", "corrupt png header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := DefaultLimits().Validate(tt.req)
			if tt.field == "" {
				require.NoError(t, err)
				return
			}
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Equal(t, tt.field, ve.Field)
			assert.Contains(t, ve.Reason, tt.reason)
			assert.Equal(t, ClassPermanent, ClassOf(err))
		})
	}
}

func TestAllowPrivateHosts(t *testing.T) {
	l := Limits{AllowPrivateHosts: true}
	for _, u := range []string{"http://127.0.0.1:8080/a.png", "http://localhost/a.png", "http://0x7f.1/a.png", "http://[::1]/a.png", "http://10.0.0.5/a.png"} {
		assert.NoError(t, l.CheckURL(u), u)
	}
	// A host no client can make sense of is refused all the same.
	var ve *ValidationError
	require.ErrorAs(t, l.CheckURL("http://1.2.3.256/a.png"), &ve)
	assert.Equal(t, "imageUrl", ve.Field)
	assert.Contains(t, ve.Reason, "not a valid one")
}

func TestLimitsAreConfiguration(t *testing.T) {
	loose := Limits{MinBase64Side: 100, MaxBase64Side: 5000, MaxBase64Len: 64 << 10, MinTarget: 50}
	img := b64(encodeImage(t, "png", 200, 200))
	require.NoError(t, loose.Validate(Request{ImageBase64: img, TargetWidth: 50, TargetHeight: 60}))
	err := loose.Validate(Request{ImageBase64: b64(encodeImage(t, "bmp", 600, 600)), TargetWidth: 60, TargetHeight: 60})
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Contains(t, ve.Error(), "imageBase64: must be at most 65536 bytes")
}

func FuzzValidate(f *testing.F) {
	f.Add("https://e.com/a.png", "", 800, 800)
	f.Add("", b64(pngBomb(5, 5)), 100, 5000)
	f.Add("", "////", 0, -1)
	f.Fuzz(func(t *testing.T, u, b string, w, h int) {
		err := DefaultLimits().Validate(Request{ImageURL: u, ImageBase64: b, TargetWidth: w, TargetHeight: h})
		if err != nil && ClassOf(err) != ClassPermanent {
			t.Fatalf("validation error not permanent: %v", err)
		}
	})
}
