package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/portforwardd/portforwardd/server/certs/certstest"
)

// testVersion is the VERSION build argument the tests build the image's
// binary with.
const testVersion = "deploy-test"

var (
	binDir   string
	binOnce  sync.Once
	binPath  string
	binError error
	binOut   []byte
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// containerfileBuild returns the shell command of the Containerfile's
// RUN instruction that runs go build, without the RUN and its --mount
// options.
func containerfileBuild(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.ReplaceAll(string(data), "\\\n", " ")
	for line := range strings.Lines(joined) {
		rest, ok := strings.CutPrefix(line, "RUN ")
		if !ok || !strings.Contains(rest, "go build") {
			continue
		}
		f := strings.Fields(rest)
		for len(f) > 0 && strings.HasPrefix(f[0], "--") {
			f = f[1:]
		}
		return strings.Join(f, " ")
	}
	t.Fatal("Containerfile: no RUN instruction runs go build")
	return ""
}

// daemonBinary builds the daemon as the Containerfile does (its own go
// build command, run by sh with the build arguments set) once per test
// run, and returns its path.
func daemonBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("compiles the daemon; skipped with -short")
	}
	build := containerfileBuild(t)
	binOnce.Do(func() {
		binDir, binError = os.MkdirTemp("", "deploy-bin")
		if binError != nil {
			return
		}
		out := regexp.MustCompile(`-o\s+(\S+)`).FindStringSubmatch(build)
		if out == nil {
			binError = fmt.Errorf("the Containerfile's build %q has no -o", build)
			return
		}
		binPath = filepath.Join(binDir, "portforwardd")
		cmd := exec.Command("sh", "-c", strings.Replace(build, out[0], "-o "+binPath, 1))
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "TARGETOS="+runtime.GOOS, "TARGETARCH="+runtime.GOARCH, "VERSION="+testVersion)
		binOut, binError = cmd.CombinedOutput()
	})
	if binError != nil {
		t.Fatalf("the Containerfile's build %q: %v\n%s", build, binError, binOut)
	}
	return binPath
}

// TestContainerfileBuilds runs the Containerfile's go build and checks
// that the version build argument reaches portforwardd --version.
func TestContainerfileBuilds(t *testing.T) {
	bin := daemonBinary(t)
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if got, want := strings.TrimSpace(string(out)), "portforwardd "+testVersion; err != nil || got != want {
		t.Errorf("%s --version: %q (%v), want %q: the Containerfile's -X does not set the version", bin, got, err, want)
	}
}

// deployedArgs are the daemon's arguments in each file that runs it, with
// the DaemonSet's $(VAR) references expanded as the kubelet would.
func deployedArgs(t *testing.T) map[string][]string {
	t.Helper()
	x := loadDaemon(t)
	ds := make([]string, len(x.args))
	for i, a := range x.args {
		ds[i] = envRef.ReplaceAllString(a, "node-a")
	}
	return map[string][]string{
		"daemonset.yaml":            ds,
		"portforwardd.service":      execStart(t, "portforwardd.service"),
		"portforwardd-crio.service": execStart(t, "portforwardd-crio.service"),
	}
}

// TestDeployedArgsParse checks each file's arguments with the daemon's
// own parser: a value it refuses (a duration without a unit, a byte count
// it cannot read, flags that do not go together) stops it at start, which
// the flag names alone do not show.
func TestDeployedArgsParse(t *testing.T) {
	bin := daemonBinary(t)
	for source, args := range deployedArgs(t) {
		t.Run(source, func(t *testing.T) {
			out, err := exec.Command(bin, append(args, "--version")...).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "portforwardd ") {
				t.Errorf("portforwardd %s --version: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// rewrite replaces the value of each flag in with, keeping the form
// (--name=v or --name v); flags not in args are appended.
func rewrite(args []string, with map[string]string) []string {
	out := append([]string(nil), args...)
	done := map[string]bool{}
	for i := 0; i < len(out); i++ {
		name, _, hasValue := strings.Cut(strings.TrimLeft(out[i], "-"), "=")
		v, ok := with[name]
		if !strings.HasPrefix(out[i], "-") || !ok {
			continue
		}
		done[name] = true
		if hasValue {
			out[i] = "--" + name + "=" + v
		} else if i+1 < len(out) {
			out[i+1] = v
		}
	}
	for name, v := range with {
		if !done[name] {
			out = append(out, "--"+name+"="+v)
		}
	}
	return out
}

// textAttr is one key=value of a log line in log/slog's text format.
var textAttr = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S+)`)

// parseLogLine returns the attributes of one line of the daemon's log,
// JSON or text.
func parseLogLine(line string) map[string]string {
	out := map[string]string{}
	var m map[string]any
	if json.Unmarshal([]byte(line), &m) == nil {
		for k, v := range m {
			out[k] = fmt.Sprint(v)
		}
		return out
	}
	for _, a := range textAttr.FindAllStringSubmatch(line, -1) {
		v := a[2]
		if strings.HasPrefix(v, `"`) {
			if s, err := strconv.Unquote(v); err == nil {
				v = s
			}
		}
		out[a[1]] = v
	}
	return out
}

// daemonAddrs are the addresses a started daemon serves on.
type daemonAddrs struct {
	listen, metrics string
}

// startDaemon runs the daemon with args until the test ends, and returns
// the addresses of its listeners once it serves, and a function that
// stops it with SIGTERM and checks that it exits 0.
func startDaemon(t *testing.T, bin string, args []string, socks ...passedSocket) (addrs daemonAddrs, stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	cmd := exec.CommandContext(ctx, bin, args...)
	if len(socks) > 0 {
		// As systemd starts a socket-activated service: the sockets
		// from descriptor 3 on, and LISTEN_PID the daemon's own PID (a
		// shell's, which then execs the daemon).
		cmd = exec.CommandContext(ctx, "sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin}, args...)...)
		var names []string
		for _, s := range socks {
			cmd.ExtraFiles = append(cmd.ExtraFiles, s.file)
			names = append(names, s.name)
		}
		cmd.Env = append(os.Environ(), "LISTEN_FDS="+strconv.Itoa(len(socks)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	logDone := make(chan struct{})
	serving := make(chan daemonAddrs, 1)
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(io.TeeReader(stderr, &log))
		var a daemonAddrs
		for sc.Scan() {
			l := parseLogLine(sc.Text())
			switch l["msg"] {
			case "serving metrics":
				a.metrics = l["addr"]
			case "serving port-forward":
				a.listen = l["addr"]
				serving <- a
			}
		}
		close(serving)
	}()
	waited := false
	wait := func() error {
		waited = true
		<-logDone
		return cmd.Wait()
	}
	t.Cleanup(func() {
		cancel()
		if !waited {
			wait()
		}
	})
	addrs, ok := <-serving
	if !ok {
		err := wait()
		t.Fatalf("portforwardd %s did not start (%v):\n%s", strings.Join(args, " "), err, log.String())
	}
	if addrs.metrics == "" {
		t.Fatalf("portforwardd %s serves no metrics listener:\n%s", strings.Join(args, " "), log.String())
	}
	return addrs, func() {
		t.Helper()
		cmd.Process.Signal(syscall.SIGTERM)
		if err := wait(); err != nil {
			t.Errorf("portforwardd %s: on SIGTERM: %v, want exit 0\n%s", strings.Join(args, " "), err, log.String())
		}
	}
}

// passedSocket is a socket passed to the daemon as systemd passes it.
type passedSocket struct {
	name string // FileDescriptorName=
	file *os.File
}

// listenLike listens where a socket unit's socket would be (a free
// loopback port; a unix socket in dir) and returns it as systemd passes
// it, under name.
func listenLike(t *testing.T, dir string, u socketUnit, name string) passedSocket {
	t.Helper()
	addr := "127.0.0.1:0"
	if u.network() == "unix" {
		addr = filepath.Join(dir, name+".sock")
	}
	ln, err := net.Listen(u.network(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f, err := ln.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return passedSocket{name: name, file: f}
}

// probeClient makes a connection per request, as the kubelet's HTTP
// prober does (DisableKeepAlives): with --reuse-port, which of the
// daemons listening on the port answers is decided per connection.
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// probeGet does what the kubelet's HTTP probe does: a GET, success for
// 200 to 399.
func probeGet(t *testing.T, addr string, g *corev1.HTTPGetAction) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+g.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		t.Fatalf("probe GET %s: %v", g.Path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestDeployedDaemonsServe starts the daemon with each file's arguments,
// its listeners moved to free loopback ports and its files (TLS, the
// kubeconfig, the CRI socket) to a temporary directory, and probes it as
// the DaemonSet's probes do: every recipe must start, answer the probes
// and the scrape, and stop cleanly on SIGTERM.
func TestDeployedDaemonsServe(t *testing.T) {
	bin := daemonBinary(t)
	x := loadDaemon(t)
	probes := map[string]*corev1.Probe{"readinessProbe": x.c.ReadinessProbe, "livenessProbe": x.c.LivenessProbe}
	for source, args := range deployedArgs(t) {
		t.Run(source, func(t *testing.T) {
			dir := t.TempDir()
			with := localRecipe(t, dir, args)
			// The sockets systemd would pass, of the same kinds, at
			// free addresses.
			var socks []passedSocket
			if strings.HasSuffix(source, ".service") {
				for name, u := range passedSockets(t, source) {
					socks = append(socks, listenLike(t, dir, u, name))
				}
			}
			for _, flag := range []string{"listen", "metrics-listen", "cri-listen"} {
				if v, _ := flagValue(args, flag); strings.HasPrefix(v, "fd://") {
					delete(with, flag)
				}
			}
			addrs, stop := startDaemon(t, bin, rewrite(args, with), socks...)
			checkProbes(t, addrs.metrics, probes, "a daemon that serves")
			if code, body := probeGet(t, addrs.metrics, &corev1.HTTPGetAction{Path: "/metrics"}); code != http.StatusOK || !strings.Contains(body, "portforwardd_build_info{") {
				t.Errorf("GET /metrics: %d, want 200 with portforwardd_build_info", code)
			}
			stop()
		})
	}
}

// localRecipe returns the flags that move a recipe's listeners to free
// loopback ports and its files (TLS, the kubeconfig, the CRI socket) to
// dir, for rewrite.
func localRecipe(t *testing.T, dir string, args []string) map[string]string {
	t.Helper()
	with := map[string]string{"listen": "127.0.0.1:0", "metrics-listen": "127.0.0.1:0"}
	if _, ok := flagValue(args, "cri-listen"); ok {
		with["cri-listen"] = "unix://" + filepath.Join(dir, "cri.sock")
	}
	if _, ok := flagValue(args, "tls-cert-file"); ok {
		ca := certstest.NewCA(t, "deploy-test-ca")
		with["tls-cert-file"], with["tls-private-key-file"] = ca.Server(t, "127.0.0.1").WriteFiles(t, dir, "tls")
		with["client-ca-file"] = filepath.Join(dir, "ca.crt")
		certstest.WriteFile(t, with["client-ca-file"], ca.CertPEM)
	}
	if _, ok := flagValue(args, "auth-kubeconfig"); ok {
		// The API server is not asked until a client comes.
		kc := filepath.Join(dir, "kubeconfig")
		certstest.WriteFile(t, kc, []byte("apiVersion: v1\nkind: Config\ncurrent-context: c\n"+
			"clusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\", insecure-skip-tls-verify: true}}]\n"+
			"users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"))
		with["auth-kubeconfig"] = kc
	}
	return with
}

// checkProbes runs the DaemonSet's probes against a metrics address, as
// the kubelet would, and wants each to succeed.
func checkProbes(t *testing.T, addr string, probes map[string]*corev1.Probe, who string) {
	t.Helper()
	for name, p := range probes {
		if p == nil || p.HTTPGet == nil {
			continue // TestDaemonSetProbes reports it
		}
		if code, body := probeGet(t, addr, p.HTTPGet); code < 200 || code >= 400 {
			t.Errorf("%s GET %s: %d %q, want 200 from %s", name, p.HTTPGet.Path, code, body, who)
		}
	}
}

// TestDaemonSetSurgeHandover runs a node's update as the DaemonSet's
// surge makes it, with the DaemonSet's own arguments: the new pod's
// daemon starts on the ports the old one listens on (which only
// --reuse-port allows), the probes succeed while both run, and once the
// old one has had its SIGTERM and exited, the new one answers the probes
// and takes port-forward connections on the same ports.
func TestDaemonSetSurgeHandover(t *testing.T) {
	bin := daemonBinary(t)
	x := loadDaemon(t)
	probes := map[string]*corev1.Probe{"readinessProbe": x.c.ReadinessProbe, "livenessProbe": x.c.LivenessProbe}
	args := deployedArgs(t)["daemonset.yaml"]
	with := localRecipe(t, t.TempDir(), args)

	old, stopOld := startDaemon(t, bin, rewrite(args, with))
	with["listen"], with["metrics-listen"] = old.listen, old.metrics
	t.Logf("the old daemon listens on %s and %s; starting the new pod's daemon on the same ports", old.listen, old.metrics)
	next, stopNext := startDaemon(t, bin, rewrite(args, with))
	if next != old {
		t.Fatalf("the new daemon listens on %+v, want the old one's %+v", next, old)
	}
	checkProbes(t, old.metrics, probes, "either daemon, while both run")

	stopOld()
	checkProbes(t, old.metrics, probes, "the new daemon, the old one gone")
	// The handshake completes only if a daemon serves the port: the
	// new one, the old one's listener being closed. (The test's CA signs
	// both the serving certificate and the client CA file.)
	roots := x509.NewCertPool()
	if pem, err := os.ReadFile(with["client-ca-file"]); err != nil || !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("the test CA %s: %v", with["client-ca-file"], err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", old.listen,
		&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Errorf("port-forward listener %s after the old daemon exited: %v, want the new daemon's TLS handshake", old.listen, err)
	} else {
		conn.Close()
	}
	stopNext()
}
