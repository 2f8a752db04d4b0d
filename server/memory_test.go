package server

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestReleaseMemorySchedule: after a session ends, memory goes back to
// the kernel releaseSettle later, then at most once per releaseIdle while
// no session is left and once per releaseBusy while some are; a stream of
// session ends does not put the release off, each end pushing it later.
func TestReleaseMemorySchedule(t *testing.T) {
	for _, tc := range []struct {
		name  string
		idle  bool
		every time.Duration
	}{
		{"idle", true, releaseIdle},
		{"busy", false, releaseBusy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &Server{}
				lastRelease := func() time.Time {
					s.rel.mu.Lock()
					defer s.rel.mu.Unlock()
					return s.rel.last
				}
				start := time.Now()
				// A session ends every 100 ms for three release intervals.
				const gap = 100 * time.Millisecond
				var releases []time.Duration
				for time.Since(start) < 3*tc.every+releaseSettle {
					s.releaseMemory(tc.idle)
					time.Sleep(gap)
					synctest.Wait()
					if l := lastRelease(); !l.IsZero() && (len(releases) == 0 || l.Sub(start) != releases[len(releases)-1]) {
						releases = append(releases, l.Sub(start))
					}
				}
				want := []time.Duration{releaseSettle, releaseSettle + tc.every, releaseSettle + 2*tc.every, releaseSettle + 3*tc.every}
				if len(releases) != len(want) {
					t.Fatalf("releases at %v with a session ending every %v; want at %v", releases, gap, want)
				}
				for i := range want {
					if releases[i] != want[i] {
						t.Fatalf("releases at %v with a session ending every %v; want at %v", releases, gap, want)
					}
				}
			})
		})
	}
}
