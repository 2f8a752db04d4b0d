package cri

import (
	"errors"
	"os"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func statusWith(t *testing.T, file string, network runtimeapi.NamespaceMode) *runtimeapi.PodSandboxStatusResponse {
	t.Helper()
	st := &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{
		State: runtimeapi.PodSandboxState_SANDBOX_READY,
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{Network: network}}},
	}}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		st.Info = map[string]string{"info": string(b)}
	}
	return st
}

func TestNetnsPathFromVerboseInfo(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		network    runtimeapi.NamespaceMode
		want       string
		wantErr    error
	}{
		{"containerd 1.6 (runtimeSpec, no sandboxMetadata)", "testdata/containerd-1.6-info.json", runtimeapi.NamespaceMode_POD,
			"/tmp/ctrd/state/io.containerd.grpc.v1.cri/netns/cni-34d21619-27e8-3691-a45b-ed517d1a2350", nil},
		{"containerd 1.7 (sandboxMetadata too)", "testdata/containerd-1.7-info.json", runtimeapi.NamespaceMode_POD,
			"/var/run/netns/cni-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", nil},
		{"CRI-O, spoofed infra container (runtimeSpec only)", "testdata/crio-spoofed-info.json", runtimeapi.NamespaceMode_POD,
			"/var/run/netns/3f1b3c55-64b2-4b9a-9c1e-6f0f2f6d8b11", nil},
		{"host network, no namespace in the spec", "", runtimeapi.NamespaceMode_NODE, HostNetns, nil},
		{"nothing to go on", "", runtimeapi.NamespaceMode_POD, "", errNoNetns},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := netnsPath(statusWith(t, tc.file, tc.network))
			if !errors.Is(err, tc.wantErr) || got != tc.want {
				t.Errorf("got %q, %v; want %q, %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestNetnsPathClosedAndPIDFallback(t *testing.T) {
	st := &runtimeapi.PodSandboxStatusResponse{Info: map[string]string{"info": `{"pid":0,"netNamespaceClosed":true,"runtimeSpec":{"linux":{"namespaces":[{"type":"network","path":"/gone"}]}}}`}}
	if _, err := netnsPath(st); !errors.Is(err, errNetnsClosed) {
		t.Errorf("closed namespace: %v, want errNetnsClosed", err)
	}
	st = &runtimeapi.PodSandboxStatusResponse{Info: map[string]string{"info": `{"pid":4242,"image":"pause"}`}}
	if got, err := netnsPath(st); err != nil || got != "/proc/4242/ns/net" {
		t.Errorf("pid only: %q, %v", got, err)
	}
	st = &runtimeapi.PodSandboxStatusResponse{Info: map[string]string{"info": `{"runtimeSpec": [`}}
	if _, err := netnsPath(st); err == nil {
		t.Error("malformed info: no error")
	}
}
