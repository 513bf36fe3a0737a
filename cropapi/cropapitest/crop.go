package cropapitest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"runtime"
	"sync"

	"github.com/muesli/smartcrop"
	"github.com/muesli/smartcrop/nfnt"
	"golang.org/x/image/draw"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/imageformat"
)

// cropped is an encoded result.
type cropped struct {
	data   []byte
	format imageformat.Format
}

func cropSlots() int { return max(1, runtime.GOMAXPROCS(0)) }

// crop finds the most salient region of the target's aspect ratio
// (smartcrop: edges, skin tones, saturation, rule of thirds), cuts it out and
// resizes it to exactly w×h. JPEG input gives JPEG; anything else PNG.
func (s *Server) crop(ctx context.Context, src []byte, w, h int) (cropped, error) {
	key := memoKey(src, w, h)
	if c, ok := s.memo.get(key); ok {
		return c, nil
	}
	c, err := s.cropUncached(ctx, src, w, h)
	if err == nil {
		s.memo.put(key, c)
	}
	return c, err
}

func (s *Server) cropUncached(ctx context.Context, src []byte, w, h int) (cropped, error) {
	select {
	case s.crops <- struct{}{}:
		defer func() { <-s.crops }()
	case <-ctx.Done():
		return cropped{}, ctx.Err()
	}
	// The header was checked against the limits already, so this full
	// decode is bounded (no decompression bomb gets here).
	info, err := cropapi.DecodeImageHeader(bytes.NewReader(src))
	if err != nil {
		return cropped{}, err
	}
	format, _ := imageformat.ByName(info.Format) // a name DecodeImageHeader gave
	img, err := format.Decode(bytes.NewReader(src))
	if err != nil {
		return cropped{}, fmt.Errorf("decode %s: %w", info.Format, err)
	}
	rect, err := smartcrop.NewAnalyzer(nfnt.NewDefaultResizer()).FindBestCrop(img, w, h)
	if err != nil {
		return cropped{}, fmt.Errorf("find crop: %w", err)
	}
	rect = rect.Intersect(img.Bounds())
	if rect.Empty() {
		rect = img.Bounds()
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	// BiLinear: smooth enough for product photos, several times faster than
	// CatmullRom on the large downscales this does.
	draw.BiLinear.Scale(dst, dst.Bounds(), img, rect, draw.Src, nil)

	var buf bytes.Buffer
	if format.Name == imageformat.JPEG {
		if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 90}); err != nil {
			return cropped{}, err
		}
		return cropped{data: buf.Bytes(), format: format}, nil
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, dst); err != nil {
		return cropped{}, err
	}
	out, _ := imageformat.ByName(imageformat.PNG)
	return cropped{data: buf.Bytes(), format: out}, nil
}

// cropMemo is a small FIFO-bounded memo of crops; a nil memo holds nothing.
type cropMemo struct {
	max   int
	mu    sync.Mutex
	byKey map[[32]byte]cropped
	order [][32]byte
}

func newCropMemo(n int) *cropMemo {
	if n <= 0 {
		return nil
	}
	return &cropMemo{max: n, byKey: map[[32]byte]cropped{}}
}

func memoKey(src []byte, w, h int) [32]byte {
	sum := sha256.New()
	sum.Write(src)
	fmt.Fprintf(sum, "|%dx%d", w, h)
	var k [32]byte
	sum.Sum(k[:0])
	return k
}

func (m *cropMemo) get(k [32]byte) (cropped, bool) {
	if m == nil {
		return cropped{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.byKey[k]
	return c, ok
}

func (m *cropMemo) put(k [32]byte, c cropped) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.byKey[k]; ok {
		return
	}
	if len(m.order) >= m.max {
		delete(m.byKey, m.order[0])
		m.order = m.order[1:]
	}
	m.byKey[k] = c
	m.order = append(m.order, k)
}
