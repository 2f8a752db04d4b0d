package streams

import (
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// maxPendingPongs bounds the pings a WebSocket keeps to answer: past
// it the oldest is dropped, as RFC 6455 §5.5.3 lets an endpoint answer
// only the most recent ping.
const maxPendingPongs = 16

// pongs answers a WebSocket's pings from a goroutine of its own, started
// when there is one to answer, so that the reading goroutine never waits
// for the connection's writer. A write to a client that is not reading
// holds the writer until the client reads; a pong written on the reading
// goroutine waited for it, and stopped everything the client sends
// meanwhile: on a v4 WebSocket, a client that uploads before it reads the
// answer, and pings while it uploads, never read again.
type pongs struct {
	ws       *websocket.Conn
	deadline func() time.Time // of each pong's write; zero for none

	mu      sync.Mutex
	queue   [][]byte      // payloads of the pings not answered yet, oldest first
	writing chan struct{} // closed when the running writer returns; nil if none runs
	closed  bool          // flush has begun: no more pongs
}

// ping queues the answer to a ping with payload data.
func (p *pongs) ping(data string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if len(p.queue) == maxPendingPongs {
		p.queue = p.queue[1:]
	}
	p.queue = append(p.queue, []byte(data))
	if p.writing == nil {
		p.writing = make(chan struct{})
		go p.write(p.writing)
	}
}

// write sends the queued pongs, in order, until none is left or a write
// fails (the connection broke or closed: the others cannot go either).
func (p *pongs) write(done chan struct{}) {
	defer close(done)
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.writing = nil
			p.mu.Unlock()
			return
		}
		data := p.queue[0]
		p.queue = p.queue[1:]
		p.mu.Unlock()
		if err := p.ws.WriteControl(websocket.PongMessage, data, p.deadline()); err != nil {
			p.mu.Lock()
			p.queue, p.writing = nil, nil
			p.mu.Unlock()
			return
		}
	}
}

// flush stops answering pings and waits, at most timeout, for the pongs
// queued to be written: before the close frame, which ends the writes.
func (p *pongs) flush(timeout time.Duration) {
	p.mu.Lock()
	p.closed = true
	w := p.writing
	p.mu.Unlock()
	if w == nil {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w:
	case <-t.C:
	}
}
