package main

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// stalledPipe returns a pipe whose reader nobody reads until the test says
// so, as journald or a runtime's log pipe that stopped taking lines.
func stalledPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// logLines writes n log lines numbered from first through log and reports
// when done; a log that blocks never reports.
func logLines(log *slog.Logger, first, n int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := first; i < first+n; i++ {
			log.Info("session started", "seq", i, "pad", "0123456789012345678901234567890123456789")
		}
	}()
	return done
}

func waitDone(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: still blocked after 30s", what)
	}
}

func TestLogQueueDoesNotBlockOnAStalledReader(t *testing.T) {
	r, w := stalledPipe(t)
	const max = 32 << 10
	q := newLogQueue(w, max, dropNotice("json"))
	log, err := newLogger("info", "json", q)
	if err != nil {
		t.Fatal(err)
	}

	// Far more than the pipe (64 KiB) and the queue hold: with stderr
	// behind slog directly, the first of these writes to block holds
	// every goroutine that logs.
	const stalled = 20000
	waitDone(t, logLines(log, 0, stalled), "logging to a stalled reader")
	dropped := q.Dropped()
	if dropped == 0 {
		t.Fatalf("%d lines into a stalled reader, with a %d-byte queue: none dropped", stalled, max)
	}

	// The reader comes back: it reads the lines queued, then a notice of
	// the gap; lines logged after that are all written.
	lines := make(chan []byte, 1024)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- append([]byte(nil), sc.Bytes()...)
		}
		close(lines)
		readErr <- sc.Err()
	}()
	const after = 100
	next, notices := 0, 0
	for b := range lines {
		var rec struct {
			Level string
			Seq   *int
			Lines uint64
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			t.Fatalf("line %q: %v", b, err)
		}
		if rec.Seq == nil {
			if rec.Level != "WARN" || rec.Lines == 0 {
				t.Fatalf("unexpected line %q", b)
			}
			notices++
			next += int(rec.Lines)
		} else {
			if *rec.Seq != next {
				t.Fatalf("line %d where %d was due: lines out of order, or a gap no notice tells of", *rec.Seq, next)
			}
			next++
		}
		if next == stalled {
			// Every line of the stall is read or told of: the
			// queue is empty, and the next lines all get through.
			waitDone(t, logLines(log, stalled, after), "logging once the reader is back")
			q.Close(30 * time.Second)
			w.Close()
		}
	}
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}
	if notices == 0 {
		t.Fatal("no notice of the dropped lines")
	}
	if next != stalled+after {
		t.Fatalf("lines read and dropped add up to %d; %d were logged", next, stalled+after)
	}
	if got := q.Dropped(); got != dropped {
		t.Fatalf("Dropped() = %d once the reader is back; it was %d when the stall ended", got, dropped)
	}
}

func TestLogQueueNoticeComesWithoutAnotherLine(t *testing.T) {
	r, w := stalledPipe(t)
	q := newLogQueue(w, 4<<10, dropNotice("text"))
	log, err := newLogger("info", "text", q)
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, logLines(log, 0, 5000), "logging to a stalled reader")
	if q.Dropped() == 0 {
		t.Fatal("no line dropped")
	}
	// Nothing is logged after the stall: the notice still comes, as the
	// last line, once the reader takes what was queued.
	sc := bufio.NewScanner(r)
	var last string
	deadline := time.AfterFunc(30*time.Second, func() { w.Close() })
	defer deadline.Stop()
	const notice = `level=WARN msg="log lines dropped: the log's reader fell behind" lines=`
	var told uint64
	for told < q.Dropped() && sc.Scan() {
		last = sc.Text()
		if _, n, ok := strings.Cut(last, notice); ok {
			k, err := strconv.ParseUint(n, 10, 64)
			if err != nil {
				t.Fatalf("notice %q: %v", last, err)
			}
			told += k
		}
	}
	if told != q.Dropped() || !strings.Contains(last, notice) {
		t.Fatalf("notices told of %d dropped lines of %d, the last line read being %q; want all, the last line a notice", told, q.Dropped(), last)
	}
}

func TestLogQueueCloseGivesUpOnAStalledReader(t *testing.T) {
	_, w := stalledPipe(t)
	q := newLogQueue(w, 1<<20, dropNotice("text"))
	io.WriteString(q, string(make([]byte, 128<<10))+"\n") // more than the pipe holds
	done := make(chan struct{})
	go func() {
		q.Close(50 * time.Millisecond)
		close(done)
	}()
	waitDone(t, done, "Close with the reader stalled")
	// A line after Close is dropped, not written or queued.
	n, err := io.WriteString(q, "late\n")
	if n != 5 || err != nil {
		t.Fatalf("Write after Close = %d, %v; want 5, nil", n, err)
	}
	if q.Dropped() != 1 {
		t.Fatalf("Dropped() = %d after one line past Close, want 1", q.Dropped())
	}
}

// slowReader is a stderr whose reader takes each write a while after it
// is made, as journald under load does; what it has taken is in got.
type slowReader struct {
	mu  sync.Mutex
	got strings.Builder
}

func (s *slowReader) Write(p []byte) (int, error) {
	time.Sleep(100 * time.Millisecond) // the reader's slowness is the subject
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got.Write(p)
}

func (s *slowReader) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got.String()
}

// TestRunWritesItsLastLinesOutBeforeExiting: the daemon's last lines (here
// why it exits: its port is taken) reach a log reader that is a little
// behind before run returns, and so before the process exits: the queue
// gets logStopGrace (2 s) at exit. Found by mutation testing: a grace of 0
// lost the "exiting" line, and survived every test, e2e included.
func TestRunWritesItsLastLinesOutBeforeExiting(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	var stderr slowReader
	code := run([]string{"--listen", taken.Addr().String(), "--metrics-listen="}, io.Discard, &stderr)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if got := stderr.String(); !strings.Contains(got, `msg=exiting`) || !strings.Contains(got, "address already in use") {
		t.Errorf("stderr when run returned:\n%s\nwant the exiting line, with its error", got)
	}
}
