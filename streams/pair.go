package streams

import "time"

// pair is the data and error stream of one forwarded connection.
type pair struct {
	requestID string
	port      uint16
	data      Stream
	errs      Stream
	timer     *time.Timer // creation timeout; nil once complete
}

func (p *pair) complete() bool { return p.data != nil && p.errs != nil }

// add puts s into the pair. It fails if a stream of that type is already
// there (the kubelet's "data stream already assigned").
func (p *pair) add(s Stream, info streamInfo) error {
	if info.isError {
		if p.errs != nil {
			return errAssigned(p.requestID, StreamTypeError)
		}
		p.errs = s
		return nil
	}
	if p.data != nil {
		return errAssigned(p.requestID, StreamTypeData)
	}
	p.data = s
	p.port = info.port // the kubelet forwards to the data stream's port
	return nil
}

// pairTable holds the pairs still waiting for their second stream. It is
// not safe for concurrent use; the session's mutex guards it.
type pairTable struct {
	pending map[string]*pair
	max     int
}

func newPairTable(max int) *pairTable {
	return &pairTable{pending: map[string]*pair{}, max: max}
}

// add files s under its requestID. It returns the pair s went into, which
// has left the table when s completed it, created=true when s opened a new
// pair, or an error when s cannot be taken.
func (t *pairTable) add(s Stream, info streamInfo) (p *pair, created bool, err error) {
	p, ok := t.pending[info.requestID]
	if !ok {
		if len(t.pending) >= t.max {
			return nil, false, ErrTooManyPending
		}
		p = &pair{requestID: info.requestID, port: info.port}
		t.pending[info.requestID] = p
		created = true
	}
	if err := p.add(s, info); err != nil {
		return nil, false, err
	}
	if p.complete() {
		delete(t.pending, p.requestID)
	}
	return p, created, nil
}

// remove takes p out of the table if it is still there.
func (t *pairTable) remove(p *pair) bool {
	if t.pending[p.requestID] != p {
		return false
	}
	delete(t.pending, p.requestID)
	return true
}

// drain empties the table and returns what was in it.
func (t *pairTable) drain() []*pair {
	ps := make([]*pair, 0, len(t.pending))
	for _, p := range t.pending {
		ps = append(ps, p)
	}
	clear(t.pending)
	return ps
}
