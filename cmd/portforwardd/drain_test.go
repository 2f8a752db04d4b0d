package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// eventsRuntime is a CRI runtime whose GetContainerEvents stays open until
// the client leaves, as the kubelet's does with EventedPLEG.
type eventsRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	started chan struct{}
}

func (r *eventsRuntime) GetContainerEvents(_ *runtimeapi.GetEventsRequest, s grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	r.started <- struct{}{}
	<-s.Context().Done()
	return s.Context().Err()
}

// logSink reads serve's JSON log: ready yields the metrics address once
// the CRI proxy is serving too; drainTimeout is what the shutdown line
// says.
type logSink struct {
	mu           sync.Mutex
	metricsAddr  string
	drainTimeout any
	ready        chan string
}

func (l *logSink) Write(p []byte) (int, error) {
	var rec struct {
		Msg          string `json:"msg"`
		Addr         string `json:"addr"`
		DrainTimeout any    `json:"drain_timeout"`
	}
	if json.Unmarshal(p, &rec) == nil {
		l.mu.Lock()
		switch rec.Msg {
		case "serving metrics":
			l.metricsAddr = rec.Addr
		case "serving CRI proxy":
			l.ready <- l.metricsAddr
		case "shutting down":
			l.drainTimeout = rec.DrainTimeout
		}
		l.mu.Unlock()
	}
	return len(p), nil
}

// TestSIGTERMDrainsWhileACRICallIsOpen: a CRI call through the proxy that
// does not end (a kubelet's GetContainerEvents, a long PullImage) does not
// hold back the drain of the forwarding server: on SIGTERM it stops taking
// sessions at once, and forwarded connections get --drain-timeout to
// finish rather than what is left of it once the proxy has stopped.
func TestSIGTERMDrainsWhileACRICallIsOpen(t *testing.T) {
	dir := t.TempDir()
	rt := &eventsRuntime{started: make(chan struct{}, 1)}
	upstream := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(upstream, rt)
	uln, err := net.Listen("unix", filepath.Join(dir, "runtime.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go upstream.Serve(uln)
	t.Cleanup(upstream.Stop)

	criSock := filepath.Join(dir, "cri.sock")
	o, err := parseFlags([]string{"--listen=127.0.0.1:0", "--metrics-listen=127.0.0.1:0", "--netns-dir=" + dir,
		"--cri-listen=unix://" + criSock, "--cri-upstream=unix://" + filepath.Join(dir, "runtime.sock"),
		"--drain-timeout=1m"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	sink := &logSink{ready: make(chan string, 1)}
	sigc := make(chan os.Signal, 2)
	served := make(chan error, 1)
	go func() { served <- serve(o, slog.New(slog.NewJSONHandler(sink, nil)), sigc) }()
	var metricsAddr string
	select {
	case metricsAddr = <-sink.ready:
	case err := <-served:
		t.Fatalf("serve ended during start-up: %v", err)
	}

	conn, err := grpc.NewClient("unix://"+criSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := runtimeapi.NewRuntimeServiceClient(conn).GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{}); err != nil {
		t.Fatal(err)
	}
	<-rt.started // the call is in flight through the proxy

	sigc <- syscall.SIGTERM
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for status := ""; status != "503 Service Unavailable"; <-tick.C {
		if time.Now().After(deadline) {
			t.Errorf("/readyz still %s 10s after SIGTERM (drain timeout 1m): the drain waits for the CRI call", status)
			break
		}
		resp, err := client.Get("http://" + metricsAddr + "/readyz")
		if err != nil {
			t.Fatalf("GET /readyz: %v", err)
		}
		resp.Body.Close()
		status = resp.Status
	}

	cancel() // the CRI call ends, and with it the proxy's graceful stop
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return after the CRI call ended")
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.drainTimeout != "1m0s" { // a duration in nanoseconds reads as 6e+10
		t.Errorf("the shutdown line's drain_timeout is %v, want \"1m0s\"", sink.drainTimeout)
	}
}
