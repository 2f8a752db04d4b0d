package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerd is a real containerd 1.6+ (Debian's package, with its CRI
// plugin) run by the test in a scratch directory, configured as
// shared/docs/CONTAINERD.md found to work on these machines: a locally
// built pause image (no registry), a bridge + host-local CNI network,
// restrict_oom_score_adj (no CAP_SYS_RESOURCE here), netns files under its
// state directory.
type containerd struct {
	dir  string
	sock string
	cmd  *exec.Cmd
	rt   runtimeapi.RuntimeServiceClient
	conn *grpc.ClientConn
	log  *syncBuffer // written by containerd's output copiers while it runs
}

const (
	pauseImage   = "localhost/portforwardd-e2e/pause:1"
	cniBridge    = "pfde2e0"
	cniSubnet    = "10.88.91.0/24"
	containerdNS = "k8s.io"
)

// containerdMissing says why the containerd e2e cannot run here, or "".
func containerdMissing() string {
	for _, bin := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			return bin + " is not installed (apt-get install containerd containernetworking-plugins)"
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		return "the CNI plugins are not installed (apt-get install containernetworking-plugins)"
	}
	return ""
}

// startContainerd starts containerd, imports the pause image and returns
// a CRI client of it. Everything it creates is removed when the test ends:
// sandboxes first (so shims, netns mounts and veths go), then containerd.
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	requireE2E(t)
	if reason := containerdMissing(); reason != "" {
		if os.Getenv("PORTFORWARDD_REQUIRE_ROOT") == "1" {
			t.Fatalf("%s, and PORTFORWARDD_REQUIRE_ROOT=1", reason)
		}
		t.Skip(reason)
	}
	dir, err := os.MkdirTemp("", "pfd-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock"), log: new(syncBuffer)}
	for _, d := range []string{"cni/net.d", "cni/ipam", "podlogs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "config.toml"), strings.ReplaceAll(containerdConfig, "<scratch>", dir))
	writeFile(t, filepath.Join(dir, "cni/net.d/10-pfde2e.conflist"), strings.ReplaceAll(cniConfig, "<scratch>", dir))
	t.Cleanup(func() { c.cleanup(t) })

	c.cmd = exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.conn, err = grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c.rt = runtimeapi.NewRuntimeServiceClient(c.conn)
	eventually(t, 30*time.Second, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.rt.Version(ctx, &runtimeapi.VersionRequest{})
		return err == nil, fmt.Sprintf("containerd's CRI does not answer: %v", err)
	})
	tarball := filepath.Join(dir, "pause.tar")
	writePauseImage(t, tarball)
	if out, err := exec.Command("ctr", "-a", c.sock, "-n", containerdNS, "images", "import", tarball).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	return c
}

// runSandbox starts a pod sandbox through rt (the proxy's client or
// containerd's) and returns its id and network namespace file.
func (c *containerd) runSandbox(t *testing.T, rt runtimeapi.RuntimeServiceClient, namespace, name, uid string) (string, string) {
	t.Helper()
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: uid},
		Hostname: name,
		Labels: map[string]string{
			"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": uid,
		},
		LogDirectory: filepath.Join(c.dir, "podlogs", uid),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_POD, Ipc: runtimeapi.NamespaceMode_POD},
		}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\ncontainerd log:\n%s", err, c.log)
	}
	id := resp.GetPodSandboxId()
	st, err := c.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct{ Type, Path string }
			}
		}
	}
	if err := json.Unmarshal([]byte(st.GetInfo()["info"]), &info); err != nil {
		t.Fatalf("verbose info: %v", err)
	}
	for _, ns := range info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			return id, ns.Path
		}
	}
	t.Fatalf("sandbox %s has no network namespace in its spec", id)
	return "", ""
}

// cleanup stops and removes every sandbox, stops containerd, and removes
// what it leaves outside its directory (CONTAINERD.md, "teardown").
func (c *containerd) cleanup(t *testing.T) {
	if c.rt != nil && c.cmd != nil && c.cmd.Process != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if list, err := c.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, sb := range list.GetItems() {
				c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetId()})
				c.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetId()})
			}
		}
		cancel()
	}
	if c.conn != nil {
		c.conn.Close()
	}
	if c.cmd != nil && c.cmd.Process != nil {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	}
	if t.Failed() {
		t.Logf("containerd log:\n%s", c.log)
	}
	// Mounts left under the directory (netns files, shm), deepest first.
	if b, err := os.ReadFile("/proc/mounts"); err == nil {
		var mounts []string
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], c.dir+"/") {
				mounts = append(mounts, f[1])
			}
		}
		sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
		for _, m := range mounts {
			if exec.Command("umount", m).Run() != nil {
				exec.Command("umount", "-l", m).Run()
			}
		}
	}
	exec.Command("ip", "link", "del", cniBridge).Run()
	if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io"); len(dirs) > 0 {
		for _, d := range dirs {
			os.Remove(d) // only if empty
		}
	}
	// Empty directories containerd 1.6 cannot be told to put elsewhere.
	for _, d := range []string{"/run/containerd/s", "/run/containerd", "/var/lib/cni/results", "/var/lib/cni"} {
		os.Remove(d) // only if empty
	}
	os.RemoveAll(c.dir)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

var pauseOnce = sync.OnceValues(func() ([]byte, error) {
	dir, err := os.MkdirTemp("", "pfd-pause-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	src := "package main\n\nimport (\n\t\"os\"\n\t\"os/signal\"\n\t\"syscall\"\n)\n\n" +
		"// pause blocks until SIGTERM or SIGINT, like the Kubernetes pause container.\n" +
		"func main() {\n\tc := make(chan os.Signal, 1)\n\tsignal.Notify(c, syscall.SIGTERM, syscall.SIGINT)\n\t<-c\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module pause\n\ngo 1.22\n"), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", "pause", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build pause: %v\n%s", err, out)
	}
	return os.ReadFile(filepath.Join(dir, "pause"))
})

// writePauseImage writes a docker-archive image whose one layer holds a
// static /pause and whose entrypoint runs it.
func writePauseImage(t *testing.T, path string) {
	t.Helper()
	bin, err := pauseOnce()
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	lw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
	lw.Write(bin)
	lw.Close()
	layerSum := sha256.Sum256(layer.Bytes())
	diffID := "sha256:" + hex.EncodeToString(layerSum[:])
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config":  map[string]any{"Entrypoint": []string{"/pause"}},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]any{{"created_by": "portforwardd e2e"}},
	})
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	layerName := hex.EncodeToString(layerSum[:]) + "/layer.tar"
	manifest, _ := json.Marshal([]map[string]any{{"Config": configName, "RepoTags": []string{pauseImage}, "Layers": []string{layerName}}})

	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, e := range []struct {
		name string
		data []byte
	}{{configName, config}, {layerName, layer.Bytes()}, {"manifest.json", manifest}} {
		if dir := filepath.Dir(e.name); dir != "." {
			tw.WriteHeader(&tar.Header{Name: dir + "/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: time.Unix(0, 0)})
		}
		tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
		tw.Write(e.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

const containerdConfig = `version = 2
root = "<scratch>/root"
state = "<scratch>/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "<scratch>/containerd.sock"

[ttrpc]
  address = ""

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "` + pauseImage + `"
    disable_apparmor = true
    enable_selinux = false
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_tls_streaming = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      discard_unpacked_layers = false
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "<scratch>/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "<scratch>/cni/net.d"
      max_conf_num = 1
  [plugins."io.containerd.internal.v1.opt"]
    path = "<scratch>/opt"
`

const cniConfig = `{
  "cniVersion": "0.4.0",
  "name": "pfde2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "` + cniBridge + `",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "<scratch>/cni/ipam",
        "ranges": [[{"subnet": "` + cniSubnet + `"}]]
      }
    }
  ]
}
`
