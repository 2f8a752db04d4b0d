package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// portPair is one LOCAL:REMOTE forward.
type portPair struct{ local, remote uint16 }

// parsePortSpecs reads kubectl's port forms with client-go's messages.
func parsePortSpecs(specs []string) ([]portPair, error) {
	var out []portPair
	for _, s := range specs {
		local, remote, found := strings.Cut(s, ":")
		switch {
		case !found:
			remote = local
		case strings.Contains(remote, ":"):
			return nil, fmt.Errorf("invalid port format '%s'", s)
		case local == "":
			local = "0"
		}
		l, err := strconv.ParseUint(local, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("error parsing local port '%s': %s", local, err)
		}
		r, err := strconv.ParseUint(remote, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("error parsing remote port '%s': %s", remote, err)
		}
		if r == 0 {
			return nil, errors.New("remote port must be > 0")
		}
		out = append(out, portPair{uint16(l), uint16(r)})
	}
	return out, nil
}

// checkRemotePorts refuses a spec whose remote port is empty ("5000:",
// ":", ""), as kubectl does before client-go parses the ports (its
// convertPodNamedPortToNumber, which splits a spec as its splitPort
// does), and with its text: client-go's own says only that "" is not a
// number. It also refuses a named remote port ("8080:http"), which
// kubectl looks up in the pod's spec: the node's daemon has no spec to
// look in, and client-go would say only that "http" is not a number. It
// runs for every transport, before any server is asked.
func checkRemotePorts(specs []string) error {
	for _, s := range specs {
		parts := strings.Split(s, ":")
		remote := parts[0]
		if len(parts) == 2 {
			remote = parts[1]
		}
		if remote == "" {
			return errors.New("remote port cannot be empty")
		}
		if namedPort(remote) {
			return fmt.Errorf("remote port '%s' is a name: give its number (portforward asks the node, which cannot look names up in the pod's spec)", remote)
		}
	}
	return nil
}

// namedPort reports whether p has the form of a Kubernetes port name
// (IANA_SVC_NAME: at most 15 lower-case letters, digits and inner
// hyphens, at least one letter, no two hyphens in a row).
func namedPort(p string) bool {
	if len(p) > 15 || strings.HasPrefix(p, "-") || strings.HasSuffix(p, "-") || strings.Contains(p, "--") {
		return false
	}
	letter := false
	for _, c := range p {
		switch {
		case 'a' <= c && c <= 'z':
			letter = true
		case '0' <= c && c <= '9', c == '-':
		default:
			return false
		}
	}
	return letter
}
