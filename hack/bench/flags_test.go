package main

import (
	"strings"
	"testing"
)

func TestPathKeys(t *testing.T) {
	got, err := pathKeys("h2, raw")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got["h2"] || !got["raw"] {
		t.Errorf("pathKeys(\"h2, raw\") = %v, want h2 and raw", got)
	}
	// The default is every path.
	all, err := pathKeys(strings.Join(pathNames, ","))
	if err != nil || len(all) != len(pathNames) {
		t.Errorf("pathKeys(all) = %v, %v", all, err)
	}
	if _, err := pathKeys("h2,http3"); err == nil || !strings.Contains(err.Error(), `"http3"`) {
		t.Errorf("pathKeys with an unknown path: err = %v, want one naming it", err)
	}
}
