package server

import (
	"testing"

	"github.com/portforwardd/portforwardd/nsenter"
)

func TestParseRoute(t *testing.T) {
	tests := []struct {
		path string
		want nsenter.Pod
		ok   bool
	}{
		{"/portForward/default/web", nsenter.Pod{Namespace: "default", Name: "web"}, true},
		{"/portForward/default/web/1234-abcd", nsenter.Pod{Namespace: "default", Name: "web", UID: "1234-abcd"}, true},
		{"/portForward/a%2Db/c", nsenter.Pod{Namespace: "a-b", Name: "c"}, true},
		{"/portForward/a%2Fb/c", nsenter.Pod{Namespace: "a/b", Name: "c"}, true}, // one segment; validation rejects it later
		{"/portForward/default", nsenter.Pod{}, false},
		{"/portForward/default/", nsenter.Pod{}, false},
		{"/portForward/default/web/", nsenter.Pod{}, false},
		{"/portForward//web", nsenter.Pod{}, false},
		{"/portForward/a/b/c/d", nsenter.Pod{}, false},
		{"/portforward/default/web", nsenter.Pod{}, false},
		{"/exec/default/web", nsenter.Pod{}, false},
		{"/portForward/%zz/web", nsenter.Pod{}, false},
		{"/", nsenter.Pod{}, false},
		{"", nsenter.Pod{}, false},
	}
	for _, tt := range tests {
		got, ok := parseRoute(tt.path)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseRoute(%q): got %+v, %v; want %+v, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}
