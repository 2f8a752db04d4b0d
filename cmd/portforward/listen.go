package main

// Listening for the raw and h2 transports, as client-go's PortForwarder
// (k8s.io/client-go/tools/portforward/portforward.go: parseAddresses,
// forward, listenOnPort, getListener) listens for kubectl and for this
// CLI's spdy and websocket transports: the same sockets, in the same
// order, with the same messages.

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
)

// listenAddress is one address to listen on.
type listenAddress struct {
	address  string
	protocol string // net.Listen's network: "tcp4", or "tcp6" (IPv6 only, so "::" and "0.0.0.0" do not collide)
	// failureMode is "all" for localhost's 127.0.0.1 and ::1 (a port
	// fails only if both fail) and "any" for an address named explicitly
	// (a port fails if it fails).
	failureMode string
}

// parseAddresses expands --address as client-go's parseAddresses does:
// each address once, "localhost" as 127.0.0.1 and ::1 unless either is
// also named explicitly (which makes it "any"), IPv4 addresses (including
// IPv4-mapped IPv6 ones) on tcp4 and the others on tcp6, sorted by
// address string. An empty list is an error, as in NewOnAddresses.
func parseAddresses(addresses []string) ([]listenAddress, error) {
	if len(addresses) == 0 {
		return nil, errors.New("you must specify at least 1 address")
	}
	parsed := map[string]listenAddress{}
	for _, a := range addresses {
		ip := net.ParseIP(a)
		switch {
		case a == "localhost":
			for _, l := range []listenAddress{{"127.0.0.1", "tcp4", "all"}, {"::1", "tcp6", "all"}} {
				if _, ok := parsed[l.address]; !ok {
					parsed[l.address] = l
				}
			}
		case ip.To4() != nil:
			parsed[a] = listenAddress{a, "tcp4", "any"}
		case ip != nil:
			parsed[a] = listenAddress{a, "tcp6", "any"}
		default:
			return nil, fmt.Errorf("%s is not a valid IP", a)
		}
	}
	return slices.SortedFunc(maps.Values(parsed), func(a, b listenAddress) int {
		return strings.Compare(a.address, b.address)
	}), nil
}

// portListener is a listener of one forwarded port.
type portListener struct {
	net.Listener
	port portPair // local is the port listened on, also when 0 was asked
}

// listenPorts listens for each port on every address, as client-go's
// forward does, and returns the listeners of the ports that listened.
// Each listener prints "Forwarding from ADDR:PORT -> REMOTE" on out. A
// port that fails (its "any" address failed, or all its "all" addresses
// did) prints "Unable to listen on port N: ..." on errOut, and the
// listeners it did open are closed (client-go leaves them accepting).
// The error, client-go's, says that no port listened. A local port 0
// becomes the port the kernel gave the first address that listened, and
// the next addresses listen on that port too.
func listenPorts(addrs []listenAddress, ports []portPair, out, errOut io.Writer) ([]portListener, error) {
	ports = slices.Clone(ports)
	var all []portListener
	forwarded := false
	for i := range ports {
		lns, err := listenOnPort(addrs, &ports[i], out)
		if err != nil {
			fmt.Fprintf(errOut, "Unable to listen on port %d: %v\n", ports[i].local, err)
			continue
		}
		forwarded = true
		all = append(all, lns...)
	}
	if !forwarded {
		return nil, fmt.Errorf("unable to listen on any of the requested ports: %v", ports)
	}
	return all, nil
}

// listenOnPort is client-go's listenOnPort and getListener for one port:
// it listens on every address, and fails if an "any" address failed or
// every "all" address did, closing the listeners it opened.
func listenOnPort(addrs []listenAddress, port *portPair, out io.Writer) ([]portListener, error) {
	var lns []portListener
	var errs []error
	failed, succeeded := map[string]int{}, map[string]int{}
	for _, a := range addrs {
		ln, err := net.Listen(a.protocol, net.JoinHostPort(a.address, strconv.Itoa(int(port.local))))
		if err != nil {
			errs = append(errs, fmt.Errorf("unable to create listener: Error %s", err))
			failed[a.failureMode]++
			continue
		}
		succeeded[a.failureMode]++
		port.local = uint16(ln.Addr().(*net.TCPAddr).Port)
		fmt.Fprintf(out, "Forwarding from %s -> %d\n", net.JoinHostPort(a.address, strconv.Itoa(int(port.local))), port.remote)
		lns = append(lns, portListener{ln, *port})
	}
	if succeeded["all"] == 0 && failed["all"] > 0 || failed["any"] > 0 {
		for _, ln := range lns {
			ln.Close()
		}
		// client-go's text, capital letter included.
		return nil, fmt.Errorf("%s: %v", "Listeners failed to create with the following errors", errs)
	}
	return lns, nil
}
