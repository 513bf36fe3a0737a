//go:build ignore

// Command gen draws the sample product images under testdata/images. They are
// our own, generated here, so they carry no licence beyond the project's.
// Run from the repository root: go run testdata/gen/main.go
package main

import (
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
)

func main() {
	dir := filepath.Join("testdata", "images")
	rng := rand.New(rand.NewPCG(1, 2))
	// A red ball right of centre on a pale studio background: the crop
	// tests check that a square crop keeps it whole.
	write(filepath.Join(dir, "ball-offcentre.jpg"), scene(rng, 1200, 800, 2, []shape{
		{kind: disc, cx: 950, cy: 400, r: 150, c: color.RGBA{220, 30, 40, 255}},
	}))
	write(filepath.Join(dir, "mug-square.png"), scene(rng, 900, 900, 0, []shape{
		{kind: box, cx: 420, cy: 480, w: 300, h: 360, c: color.RGBA{30, 90, 200, 255}},
		{kind: ring, cx: 610, cy: 470, r: 90, c: color.RGBA{30, 90, 200, 255}},
	}))
	write(filepath.Join(dir, "bottle-tall.png"), scene(rng, 600, 1000, 0, []shape{
		{kind: box, cx: 300, cy: 620, w: 180, h: 520, c: color.RGBA{40, 160, 70, 255}},
		{kind: box, cx: 300, cy: 320, w: 70, h: 110, c: color.RGBA{240, 200, 40, 255}},
	}))
}

type kind int

const (
	disc kind = iota
	ring
	box
)

type shape struct {
	kind      kind
	cx, cy, r float64
	w, h      float64
	c         color.RGBA
}

func (s shape) covers(x, y float64) bool {
	switch s.kind {
	case disc:
		return math.Hypot(x-s.cx, y-s.cy) <= s.r
	case ring:
		d := math.Hypot(x-s.cx, y-s.cy)
		return d <= s.r && d >= s.r*0.6
	default:
		return math.Abs(x-s.cx) <= s.w/2 && math.Abs(y-s.cy) <= s.h/2
	}
}

// scene is a soft grey gradient with light grain (none for PNGs, which
// would not compress it), and the shapes on top with
// a little shading so that they have edges and texture like a photo.
func scene(rng *rand.Rand, w, h int, grain float64, shapes []shape) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			g := 235 - 25*float64(y)/float64(h) + rng.NormFloat64()*grain
			c := color.RGBA{uint8(g), uint8(g), uint8(g - 3), 255}
			for _, s := range shapes {
				if s.covers(float64(x), float64(y)) {
					shade := 1 - 0.25*float64(x-int(s.cx-s.r-s.w/2))/float64(2*s.r+s.w+1)
					c = color.RGBA{clamp(float64(s.c.R) * shade), clamp(float64(s.c.G) * shade), clamp(float64(s.c.B) * shade), 255}
				}
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

func clamp(v float64) uint8 { return uint8(max(0, min(255, v))) }

func write(path string, img image.Image) {
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	if filepath.Ext(path) == ".jpg" {
		err = jpeg.Encode(f, img, &jpeg.Options{Quality: 80})
	} else {
		err = png.Encode(f, img)
	}
	if err != nil {
		log.Fatal(err)
	}
}
