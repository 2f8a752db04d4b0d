package cri

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FuzzNetnsPath feeds arbitrary verbose info (the runtime's JSON) to
// netnsPath. It must not panic; a path it returns is never empty and
// comes from where its documentation says, in that order (the runtime
// spec's network namespace, containerd's sandbox metadata, the host's
// namespace for host-network pods, /proc/<pid>/ns/net); a closed
// namespace is errNetnsClosed; JSON it cannot parse is an error that says
// so. The answer is the same for the info re-encoded from what was
// parsed.
func FuzzNetnsPath(f *testing.F) {
	for _, file := range []string{"testdata/containerd-1.6-info.json", "testdata/containerd-1.7-info.json", "testdata/crio-spoofed-info.json"} {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b), true, false)
	}
	f.Add(`{"pid":4242,"netNamespaceClosed":true}`, true, false)
	f.Add(`{"pid":4242}`, true, true)
	f.Add(`{"runtimeSpec":{"linux":{"namespaces":[{"type":"network","path":""},{"type":"network","path":"/b"}]}}}`, true, false)
	f.Add(`{"RuntimeSpec":{"Linux":{"Namespaces":[{"Type":"network","Path":"/x"}]}},"pid":-1}`, true, false)
	f.Add(`{"sandboxMetadata":{"Metadata":{"NetNSPath":"/var/run/netns/cni-1"}}}`, true, false)
	f.Add(`{"pid":"1"}`, true, false)
	f.Add("", false, true)
	f.Fuzz(func(t *testing.T, info string, hasInfo, hostNetwork bool) {
		mode := runtimeapi.NamespaceMode_POD
		if hostNetwork {
			mode = runtimeapi.NamespaceMode_NODE
		}
		st := &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{
			Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{Network: mode}}},
		}}
		if hasInfo {
			st.Info = map[string]string{"info": info}
		}
		path, err := netnsPath(st)

		var parsed sandboxInfo
		var perr error
		if hasInfo && info != "" {
			perr = json.Unmarshal([]byte(info), &parsed)
		}
		want, wantErr := "", error(nil)
		switch {
		case perr != nil:
		case parsed.NetNamespaceClosed:
			wantErr = errNetnsClosed
		default:
			for _, ns := range parsed.RuntimeSpec.Linux.Namespaces {
				if ns.Type == "network" && ns.Path != "" {
					want = ns.Path
					break
				}
			}
			switch {
			case want != "":
			case parsed.SandboxMetadata.Metadata.NetNSPath != "":
				want = parsed.SandboxMetadata.Metadata.NetNSPath
			case hostNetwork:
				want = HostNetns
			case parsed.PID > 0:
				want = fmt.Sprintf("/proc/%d/ns/net", parsed.PID)
			default:
				wantErr = errNoNetns
			}
		}
		switch {
		case perr != nil:
			if err == nil || !strings.HasPrefix(err.Error(), "parse verbose info") {
				t.Fatalf("netnsPath(%q): %q, %v; want a parse error (%v)", info, path, err, perr)
			}
			return
		case wantErr != nil:
			if !errors.Is(err, wantErr) {
				t.Fatalf("netnsPath(%q): %q, %v; want %v", info, path, err, wantErr)
			}
		case err != nil || path != want || path == "":
			t.Fatalf("netnsPath(%q): %q, %v; want %q", info, path, err, want)
		}

		// What was parsed, encoded again, says the same.
		re, merr := json.Marshal(parsed)
		if merr != nil {
			t.Fatalf("re-encode %+v: %v", parsed, merr)
		}
		st.Info = map[string]string{"info": string(re)}
		if path2, err2 := netnsPath(st); path2 != path || (err2 == nil) != (err == nil) {
			t.Fatalf("netnsPath(%q) = %q, %v; re-encoded as %s: %q, %v", info, path, err, re, path2, err2)
		}
	})
}
