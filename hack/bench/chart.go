package main

import (
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"strconv"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// chartRow is one workload: a throughput per path, in MiB/s.
type chartRow struct {
	label  string
	values []float64
}

// palette gives each path (its -paths key) its color, whichever paths
// are measured. The CLI's paths take the lighter shade of the transport
// they carry connections over.
var palette = map[string]color.RGBA{
	"direct":       {0x55, 0x55, 0x55, 0xff},
	"reference":    {0xd6, 0x27, 0x28, 0xff},
	"spdy":         {0x1f, 0x77, 0xb4, 0xff},
	"tunnel":       {0x2c, 0xa0, 0x2c, 0xff},
	"v4":           {0xff, 0x7f, 0x0e, 0xff},
	"raw":          {0x94, 0x67, 0xbd, 0xff},
	"h2":           {0x8c, 0x56, 0x4b, 0xff},
	"cli-spdy":     {0x9e, 0xc5, 0xe8, 0xff},
	"cli-raw":      {0xc5, 0xb0, 0xd5, 0xff},
	"cli-h2":       {0xc4, 0x9c, 0x94, 0xff},
	"relay":        {0xe3, 0x77, 0xc2, 0xff},
	"floor":        {0xbc, 0xbd, 0x22, 0xff},
	"floor-tunnel": {0x17, 0xbe, 0xcf, 0xff},
}

// writeChart draws grouped horizontal bars: one group per workload, one
// bar per path (names, with their -paths keys for their colors), with the
// rates written next to the bars.
func writeChart(file string, names, keys []string, rows []chartRow) error {
	const (
		width, left, barH, gap, top = 900, 10, 14, 22, 40
	)
	height := top + len(rows)*(len(names)*barH+gap+16) + len(names)*16 + 20
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	text := func(x, y int, s string, c color.Color) {
		d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	var maxV float64
	for _, r := range rows {
		for _, v := range r.values {
			maxV = max(maxV, v)
		}
	}
	if maxV == 0 {
		maxV = 1
	}
	text(left, 20, "portforwardd throughput, MiB/s (client-go port-forward; longer is better)", color.Black)
	y := top
	barMax := float64(width - 300)
	for _, r := range rows {
		text(left, y+10, strings.ReplaceAll(r.label, "→", "->"), color.Black) // basicfont is ASCII
		y += 16
		for i, v := range r.values {
			if v <= 0 {
				y += barH
				continue
			}
			w := int(v / maxV * barMax)
			draw.Draw(img, image.Rect(left+150, y, left+150+w, y+barH-3), image.NewUniform(palette[keys[i]]), image.Point{}, draw.Src)
			text(left+155+w, y+barH-4, formatRate(v), color.Black)
			y += barH
		}
		y += gap
	}
	for i, n := range names {
		draw.Draw(img, image.Rect(left, y, left+12, y+12), image.NewUniform(palette[keys[i]]), image.Point{}, draw.Src)
		text(left+18, y+10, n, color.Black)
		y += 16
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func formatRate(v float64) string {
	return fmtFloat(v) + " MiB/s"
}

func fmtFloat(v float64) string {
	return strconv.FormatFloat(v, 'f', 0, 64)
}
