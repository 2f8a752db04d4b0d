package server

import (
	"slices"
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

// TestReleaseMemoryAfterAnEndItsReleaseCameTooSoonFor: a session that
// ends while a release is pending, less than releaseSettle before it
// runs, still gets its memory handed back: by one more release after it
// has settled, within releaseIdle of the first when no session is left.
// The first release ran too soon to free that session's buffers, and no
// later end may come to ask for another.
func TestReleaseMemoryAfterAnEndItsReleaseCameTooSoonFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &Server{}
		start := time.Now()
		s.releaseMemory(true)
		time.Sleep(releaseSettle - 50*time.Millisecond)
		s.releaseMemory(true) // settles 200 ms after the first release
		var releases []time.Duration
		for time.Since(start) < 3*releaseIdle {
			time.Sleep(10 * time.Millisecond)
			synctest.Wait()
			s.rel.mu.Lock()
			l := s.rel.last
			s.rel.mu.Unlock()
			if !l.IsZero() && (len(releases) == 0 || l.Sub(start) != releases[len(releases)-1]) {
				releases = append(releases, l.Sub(start))
			}
		}
		if want := []time.Duration{releaseSettle, releaseSettle + releaseIdle}; !slices.Equal(releases, want) {
			t.Fatalf("two sessions ended %v apart, no session left: releases at %v, want at %v",
				releaseSettle-50*time.Millisecond, releases, want)
		}
	})
}
