package spdy

import (
	"fmt"
	"net"
	"sync"
)

// vectored reports whether writes to nc can be vectored (writev); other
// connections (the WebSocket tunnel) get each batch in one Write.
func vectored(nc net.Conn) bool {
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

// flatBuffers hold a batch copied into one Write, for connections that
// take no vectored writes, while it is written.
var flatBuffers sync.Pool

// writeLoop is the only goroutine that writes to the connection. Each
// round it takes every queued control frame, then up to MaxFrame bytes
// from each stream with data in turn, and writes the batch at once.
func (c *Conn) writeLoop() {
	defer close(c.writerOK)
	hdrs := make([]byte, 0, maxBatchFrames*frameHeaderLen)
	bufs := make(net.Buffers, 0, maxBatchFrames*2)
	batch := make([]*Stream, 0, maxBatchFrames)
	var spare [][]byte
	vec := vectored(c.nc)
	for {
		c.wmu.Lock()
		for c.writing || len(c.ctrl) == 0 && len(c.active) == 0 && !c.closing && !c.wclosed {
			c.wmu.Unlock()
			<-c.wake
			c.wmu.Lock()
		}
		if c.wclosed || c.closing && len(c.ctrl) == 0 && len(c.active) == 0 {
			c.wclosed = true
			c.wmu.Unlock()
			return
		}
		bufs, hdrs, batch = bufs[:0], hdrs[:0], batch[:0]
		ctrl := c.ctrl
		c.ctrl, c.ctrlSize = spare[:0], 0
		frames := 0
		for _, f := range ctrl {
			bufs = append(bufs, f)
		}
		size := 0
		for _, s := range c.active {
			s.batchOff, s.finSent = 0, false
		}
		// Round robin: each pass takes one frame from every stream that
		// still has something for this batch.
		for progressed := true; progressed && frames < maxBatchFrames && size < maxBatch; {
			progressed = false
			for _, s := range c.active {
				if frames == maxBatchFrames || size >= maxBatch {
					break
				}
				rest := len(s.pending) - s.batchOff
				if rest == 0 && (!s.fin || s.finSent) {
					continue
				}
				n := min(rest, c.opts.MaxFrame)
				var flags uint8
				if n == rest && s.fin {
					flags = flagFin
					s.finSent = true
				}
				if !s.inflight {
					s.inflight = true
					batch = append(batch, s)
				}
				hdrs = appendDataHeader(hdrs, s.id, flags, n)
				bufs = append(bufs, hdrs[len(hdrs)-frameHeaderLen:])
				if n > 0 {
					bufs = append(bufs, s.pending[s.batchOff:s.batchOff+n])
				}
				s.batchOff += n
				size += n
				frames++
				progressed = true
			}
		}
		// Next batch starts with the next stream.
		if len(c.active) > 1 {
			c.active = append(c.active[1:], c.active[0])
		}
		c.writing = true
		c.wmu.Unlock()

		var err error
		if vec {
			_, err = bufs.WriteTo(c.nc)
		} else {
			// The copy comes from a pool and the batch's slices are
			// dropped once written, so a quiet connection holds neither
			// (about 1 MiB and the writers' buffers, for its life).
			fp, _ := flatBuffers.Get().(*[]byte)
			if fp == nil {
				fp = new([]byte)
			}
			flat := (*fp)[:0]
			for _, b := range bufs {
				flat = append(flat, b...)
			}
			_, err = c.nc.Write(flat)
			*fp = flat
			flatBuffers.Put(fp)
			clear(bufs)
		}
		c.touch()
		for i := range ctrl {
			ctrl[i] = nil
		}
		spare = ctrl

		c.wmu.Lock()
		c.writing = false
		for _, s := range batch {
			s.inflight = false
			if err == nil && s.finSent {
				s.ended = true // the FIN is on the wire
			}
			switch {
			case s.failErr != nil: // reset while we wrote
				s.pending = nil
				s.wdone <- s.failErr
				s.failErr = nil
			case err != nil:
			case s.batchOff == len(s.pending) && (!s.fin || s.finSent):
				s.pending = s.pending[:0]
				s.queued = false
				for i, a := range c.active {
					if a == s {
						c.active = append(c.active[:i], c.active[i+1:]...)
						break
					}
				}
				s.pending = nil
				s.wdone <- nil
			default:
				s.pending = s.pending[s.batchOff:]
			}
		}
		if err != nil {
			c.wclosed = true
			werr := fmt.Errorf("connection write: %v: %w", err, ErrConnClosed)
			for len(c.active) > 0 {
				c.failPendingLocked(c.active[0], werr)
			}
			c.wmu.Unlock()
			c.nc.Close()
			return
		}
		c.wmu.Unlock()
	}
}

// writeDirect writes one DATA frame on the calling goroutine, for a Write
// that finds the writer idle: an interactive stream's small writes then
// cost no goroutine handoffs. The caller has set c.writing; writeDirect
// clears it, and hands anything queued meanwhile to the writer.
func (c *Conn) writeDirect(s *Stream, p []byte, fin bool) error {
	var flags uint8
	if fin {
		flags = flagFin
	}
	var hdr [frameHeaderLen]byte
	bufs := net.Buffers{appendDataHeader(hdr[:0], s.id, flags, len(p)), p}
	_, err := bufs.WriteTo(c.nc)
	return c.directDone(err)
}

// directDone ends a write that went direct: it clears c.writing, and
// after a failure stops the writer and fails every queued stream, as the
// writer does.
func (c *Conn) directDone(err error) error {
	c.touch()
	c.wmu.Lock()
	c.writing = false
	if err != nil && !c.wclosed {
		c.wclosed = true
		werr := fmt.Errorf("connection write: %v: %w", err, ErrConnClosed)
		for len(c.active) > 0 {
			c.failPendingLocked(c.active[0], werr)
		}
		c.wakeWriter()
		c.wmu.Unlock()
		c.nc.Close()
		return werr
	}
	if len(c.ctrl) > 0 || len(c.active) > 0 || c.closing || c.wclosed {
		c.wakeWriter()
	}
	c.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("connection write: %v: %w", err, ErrConnClosed)
	}
	return nil
}
