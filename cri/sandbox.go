package cri

import (
	"encoding/json"
	"errors"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// HostNetns is the Target path used for host-network sandboxes: the
// daemon's own network namespace (it runs in the host's).
const HostNetns = "/proc/self/ns/net"

// errNoNetns is a sandbox whose verbose info names no network namespace.
var errNoNetns = errors.New("network namespace path of sandbox is empty")

// errNetnsClosed is a stopped sandbox whose namespace is gone.
var errNetnsClosed = errors.New("network namespace of sandbox is closed")

// sandboxInfo is the part of PodSandboxStatus(verbose).info["info"] this
// package reads. It covers CRI-O ({"runtimeSpec": ..., "pid": ...}) and
// containerd (1.6: runtimeSpec, pid, netNamespaceClosed; 1.7 and later
// also sandboxMetadata.Metadata.NetNSPath).
type sandboxInfo struct {
	PID                int  `json:"pid"`
	NetNamespaceClosed bool `json:"netNamespaceClosed"`
	RuntimeSpec        struct {
		Linux struct {
			Namespaces []struct {
				Type string `json:"type"`
				Path string `json:"path"`
			} `json:"namespaces"`
		} `json:"linux"`
	} `json:"runtimeSpec"`
	SandboxMetadata struct {
		Metadata struct {
			NetNSPath string `json:"NetNSPath"`
		} `json:"Metadata"`
	} `json:"sandboxMetadata"`
}

// netnsPath finds the network namespace of a sandbox from its verbose
// status: the runtime spec's network namespace path (both runtimes), then
// containerd's sandbox metadata, then host network (no namespace of its
// own), then the sandbox process's /proc/<pid>/ns/net.
func netnsPath(st *runtimeapi.PodSandboxStatusResponse) (string, error) {
	var info sandboxInfo
	if raw, ok := st.GetInfo()["info"]; ok && raw != "" {
		if err := json.Unmarshal([]byte(raw), &info); err != nil {
			return "", fmt.Errorf("parse verbose info: %w", err)
		}
	}
	if info.NetNamespaceClosed {
		return "", errNetnsClosed
	}
	for _, ns := range info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "" {
			return ns.Path, nil
		}
	}
	if p := info.SandboxMetadata.Metadata.NetNSPath; p != "" {
		return p, nil
	}
	if st.GetStatus().GetLinux().GetNamespaces().GetOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE {
		return HostNetns, nil
	}
	if info.PID > 0 {
		return fmt.Sprintf("/proc/%d/ns/net", info.PID), nil
	}
	return "", errNoNetns
}
