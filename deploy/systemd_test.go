package deploy

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// unitDeps is what one systemd unit file says about other units: its
// [Unit] dependencies and its [Install] section, by setting.
type unitDeps map[string][]string

// readUnitDeps reads the dependency settings of a unit file (the lists
// are space-separated and may be given more than once).
func readUnitDeps(t *testing.T, file string) unitDeps {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	deps := unitDeps{}
	section := ""
	for line := range strings.Lines(strings.ReplaceAll(string(data), "\\\n", " ")) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") || (section != "[Unit]" && section != "[Install]") {
			continue
		}
		deps[key] = append(deps[key], strings.Fields(value)...)
	}
	return deps
}

// restartedWith returns the units systemd stops or restarts when unit is
// explicitly stopped or restarted (systemctl stop, restart): every unit
// that has Requires=, BindsTo= or PartOf= on it, transitively
// (systemd.unit(5): "this unit will be stopped (or restarted) if one of
// the other units is explicitly stopped (or restarted)"). RequiredBy= in
// an [Install] section is a Requires= of the unit it names (once enabled).
func restartedWith(units map[string]unitDeps, unit string) []string {
	// requiredBy[x] are the units that go down with x.
	requiredBy := map[string][]string{}
	for name, d := range units {
		for _, key := range []string{"Requires", "BindsTo", "PartOf"} {
			for _, other := range d[key] {
				requiredBy[other] = append(requiredBy[other], name)
			}
		}
		requiredBy[name] = append(requiredBy[name], d["RequiredBy"]...)
	}
	var out []string
	todo := []string{unit}
	for len(todo) > 0 {
		u := todo[0]
		todo = todo[1:]
		for _, dep := range requiredBy[u] {
			if dep != unit && !slices.Contains(out, dep) {
				out = append(out, dep)
				todo = append(todo, dep)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestCRIOUnitDependencies: the proxy outlives a CRI-O restart (it
// reconnects, and forwarded connections never touch CRI-O), and neither a
// CRI-O restart nor the proxy's own restart restarts the kubelet, whose
// CRI client reconnects by itself. Ordering still puts the proxy between
// the two at boot.
func TestCRIOUnitDependencies(t *testing.T) {
	const unit = "portforwardd-crio.service"
	units := map[string]unitDeps{unit: readUnitDeps(t, unit)}
	d := units[unit]
	if !slices.Contains(d["After"], "crio.service") || !slices.Contains(d["Before"], "kubelet.service") {
		t.Errorf("%s: After=%v Before=%v, want After=crio.service and Before=kubelet.service (the kubelet must find the proxy's socket)", unit, d["After"], d["Before"])
	}
	if !slices.Contains(append(d["Wants"], d["Requires"]...), "crio.service") {
		t.Errorf("%s: starting it does not start crio.service (Wants=)", unit)
	}
	if !slices.Contains(append(d["WantedBy"], d["RequiredBy"]...), "kubelet.service") {
		t.Errorf("%s: starting the kubelet does not start it (WantedBy=kubelet.service)", unit)
	}
	if got := restartedWith(units, "crio.service"); len(got) > 0 {
		t.Errorf("systemctl restart crio.service also restarts %v: every forwarded connection on the node is cut for a runtime restart the proxy rides out", got)
	}
	if got := restartedWith(units, unit); len(got) > 0 {
		t.Errorf("systemctl restart %s also restarts %v: upgrading the proxy must not restart the kubelet", unit, got)
	}
}

// TestRestartedWith checks the dependency model against systemd.unit(5).
func TestRestartedWith(t *testing.T) {
	units := map[string]unitDeps{
		"a.service": {"Requires": {"b.service"}},
		"b.service": {"RequiredBy": {"c.service"}, "Wants": {"d.service"}},
		"e.service": {"PartOf": {"a.service"}, "After": {"b.service"}},
		"f.service": {"BindsTo": {"d.service"}},
	}
	for unit, want := range map[string][]string{
		"b.service": {"a.service", "c.service", "e.service"},
		"a.service": {"e.service"},
		"d.service": {"f.service"},
		"c.service": nil,
	} {
		if got := restartedWith(units, unit); !slices.Equal(got, want) {
			t.Errorf("restartedWith(%s): got %v, want %v", unit, got, want)
		}
	}
}

// socketUnit is what a .socket unit says of the socket it holds.
type socketUnit struct {
	file    string
	listen  string // ListenStream=: host:port, or a unix socket's path
	name    string // FileDescriptorName=
	service string // Service=
}

// readSocketUnit reads a socket unit's [Socket] section.
func readSocketUnit(t *testing.T, file string) socketUnit {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	u := socketUnit{file: file}
	section := ""
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") || section != "[Socket]" {
			continue
		}
		switch key {
		case "ListenStream":
			if u.listen != "" {
				t.Fatalf("%s: more than one ListenStream=; FileDescriptorName= would name them all alike", file)
			}
			u.listen = value
		case "FileDescriptorName":
			u.name = value
		case "Service":
			u.service = value
		}
	}
	return u
}

// network is the daemon's name for the socket's kind.
func (u socketUnit) network() string {
	if strings.HasPrefix(u.listen, "/") {
		return "unix"
	}
	return "tcp"
}

// address is the socket as a listener flag would give it.
func (u socketUnit) address() string {
	if u.network() == "unix" {
		return "unix://" + u.listen
	}
	return u.listen
}

// passedSockets returns the socket units systemd passes to a service
// (its Sockets=), by the name the daemon takes each by.
func passedSockets(t *testing.T, service string) map[string]socketUnit {
	t.Helper()
	out := map[string]socketUnit{}
	for _, file := range strings.Fields(unitSetting(t, service, "Sockets")) {
		u := readSocketUnit(t, file)
		if _, dup := out[u.name]; dup {
			t.Fatalf("%s: two of its sockets are named %q", service, u.name)
		}
		out[u.name] = u
	}
	return out
}

// listenAddress returns the address a listener flag of a service's
// ExecStart serves: its value, or for fd://NAME the socket unit's.
func listenAddress(t *testing.T, service, flag string) string {
	t.Helper()
	v, _ := flagValue(execStart(t, service), flag)
	if name, ok := strings.CutPrefix(v, "fd://"); ok {
		u, ok := passedSockets(t, service)[name]
		if !ok {
			t.Fatalf("%s: --%s=%s names no socket of its Sockets=", service, flag, v)
		}
		return u.address()
	}
	return v
}

// TestSocketUnits: each fd://NAME a service's ExecStart takes is a socket
// unit in its Sockets= with FileDescriptorName=NAME, of the kind the flag
// needs, whose Service= is that service and which the service requires;
// each socket passed is taken. A name that does not match stops the
// daemon at start; a socket not passed never reaches it.
func TestSocketUnits(t *testing.T) {
	flagNetwork := map[string]string{"listen": "tcp", "metrics-listen": "tcp", "cri-listen": "unix"}
	for _, service := range []string{"portforwardd.service", "portforwardd-crio.service"} {
		t.Run(service, func(t *testing.T) {
			socks := passedSockets(t, service)
			if len(socks) == 0 {
				t.Fatal("no Sockets=: a restart refuses the clients that come meanwhile")
			}
			args := execStart(t, service)
			deps := readUnitDeps(t, service)
			taken := map[string]bool{}
			for flag, network := range flagNetwork {
				v, _ := flagValue(args, flag)
				name, ok := strings.CutPrefix(v, "fd://")
				if !ok {
					continue
				}
				u, ok := socks[name]
				switch {
				case !ok:
					t.Errorf("--%s=%s: no socket of Sockets= is named %q", flag, v, name)
					continue
				case u.network() != network:
					t.Errorf("--%s=%s: %s listens on %s, a %s socket; the flag takes %s", flag, v, u.file, u.listen, u.network(), network)
				case u.service != service:
					t.Errorf("%s: Service=%s, want %s", u.file, u.service, service)
				}
				if !slices.Contains(deps["Requires"], u.file) || !slices.Contains(deps["After"], u.file) {
					t.Errorf("%s does not require and follow %s", service, u.file)
				}
				taken[name] = true
			}
			for name, u := range socks {
				if !taken[name] {
					t.Errorf("%s (FileDescriptorName=%s) is passed and no flag takes it", u.file, name)
				}
			}
		})
	}
}
