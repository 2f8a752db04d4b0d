package main

import "testing"

// TestPaletteHasEveryPath: a path without a color would be drawn
// transparent, bars and legend both.
func TestPaletteHasEveryPath(t *testing.T) {
	for _, k := range append([]string{"direct", "reference"}, pathNames...) {
		if c, ok := palette[k]; !ok || c.A == 0 {
			t.Errorf("path %q has no color in the chart's palette", k)
		}
	}
}
