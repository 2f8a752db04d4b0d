package streams

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fuzzBasePort is the first port of a fuzzed v4 session; port i is
// fuzzBasePort+i.
const fuzzBasePort = 1000

// pipePodConn is the server's end of an in-memory pod connection. v4 has
// no half-close, so CloseWrite has nothing to pass on.
type pipePodConn struct{ net.Conn }

func (pipePodConn) CloseWrite() error { return nil }

// encodeChannel frames data for channel ch as a v4 client does.
func encodeChannel(b64 bool, ch byte, data []byte) []byte {
	if b64 {
		return base64.StdEncoding.AppendEncode([]byte{'0' + ch}, data)
	}
	return append([]byte{ch}, data...)
}

// kubeletDelivers returns the port a client message goes to and its
// bytes, as the kubelet's wsstream decides (DataFromSocket): empty
// messages, error and unknown channels, and undecodable base64 go
// nowhere (port -1), whole.
func kubeletDelivers(b64 bool, ports int, msg []byte) (int, []byte) {
	if len(msg) == 0 {
		return -1, nil
	}
	ch := msg[0]
	if b64 {
		ch -= '0' // a byte, as in wsstream: below '0' wraps to an unknown channel
	}
	if ch%2 != 0 || int(ch)/2 >= ports {
		return -1, nil
	}
	data := msg[1:]
	if b64 {
		d, err := base64.StdEncoding.DecodeString(string(data))
		if err != nil {
			return -1, nil
		}
		data = d
	}
	return int(ch) / 2, data
}

// channelScript turns fuzz input into client frames, with the bytes each
// port's pod must receive (ending with a sentinel message per port, so a
// pod knows when it has everything) and the ping payloads sent.
//
// The script is records of flags, length, payload. Flags bits 0-1: 0 a
// data message for port flags>>5, framed by the harness; 1 a raw message
// (the payload as is, first byte the channel); 2 a ping; 3 as 0, in two
// frames. Bit 2 splits raw messages too; bit 4 sends text instead of
// binary.
func channelScript(script []byte, ports int, b64 bool) (frames [][]byte, want [][]byte, pings [][]byte) {
	want = make([][]byte, ports)
	for i := 0; i+1 < len(script); {
		flags, n := script[i], int(script[i+1])
		i += 2
		payload := script[i:min(i+n, len(script))]
		i += len(payload)
		opcode := byte(opBinary)
		if flags&0x10 != 0 {
			opcode = opText
		}
		switch flags & 3 {
		case 0, 3:
			port := int(flags>>5) % ports
			frames = append(frames, clientMessage(opcode, encodeChannel(b64, byte(2*port), payload), flags&3 == 3))
			want[port] = append(want[port], payload...)
		case 1:
			frames = append(frames, clientMessage(opcode, payload, flags&4 != 0))
			if port, data := kubeletDelivers(b64, ports, payload); port >= 0 {
				want[port] = append(want[port], data...)
			}
		case 2:
			p := payload[:min(len(payload), 125)]
			frames = append(frames, clientFrame(true, opPing, p, uint32(i)))
			pings = append(pings, p)
		}
	}
	for port := range ports {
		end := fmt.Appendf(nil, "\xffend of port %d", port)
		frames = append(frames, clientMessage(opBinary, encodeChannel(b64, byte(2*port), end), false))
		want[port] = append(want[port], end...)
	}
	return frames, want, pings
}

// echoingPod reads want bytes (giving up after a while), writes them back
// and closes: the port then ends, as v4 ports end when the pod does.
func echoingPod(pod net.Conn, want int) ([]byte, error) {
	defer pod.Close()
	pod.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, want)
	n, err := io.ReadFull(pod, buf)
	if n > 0 {
		pod.Write(buf[:n])
	}
	return buf[:n], err
}

// FuzzChannels runs the v4 channel protocol, binary and base64, over an
// in-memory WebSocket with scripted client messages (see channelScript)
// and pods that echo. Each pod must receive exactly what the kubelet would
// deliver to it; the server must first announce every port on its data
// and error channels, then send back each pod's bytes on the port's data
// channel in the mode's framing, answer every ping with its payload (but
// the oldest of more than maxPendingPongs waiting), and
// end with a close frame 1000 once the pods have closed.
func FuzzChannels(f *testing.F) {
	// One port, then two; base64 with padding and line breaks; messages
	// for an error channel, an unknown one and an empty one; a split
	// message and a ping.
	f.Add(false, uint8(0), []byte("\x00\x05hello"))
	f.Add(true, uint8(1), []byte("\x20\x04ping\x01\x03\x00abc\x02\x03xyz\x03\x06a long"))
	f.Add(true, uint8(0), []byte("\x01\x05\x30QUJD\x01\x09\x31QUJD!!!!\x01\x05\x30QQ==\x01\x05\x32QQ=="))
	f.Add(false, uint8(2), []byte("\x01\x02\x01x\x01\x02\x09y\x01\x00\x11\x03\x04abc\x40\x02hi"))
	f.Add(true, uint8(0), []byte("\x01\x02\x2fx\x01\x0b0QUJD\r\nREVG"))
	f.Fuzz(func(t *testing.T, b64 bool, nports uint8, script []byte) {
		ports := 1 + int(nports%3)
		frames, want, pings := channelScript(script, ports, b64)

		ws, cli, br := pipeWebSocket(t)
		defer cli.Close()
		got := make([][]byte, ports)
		var pods sync.WaitGroup
		var dials atomic.Int32
		cfg := ChannelConfig{Base64: b64, Pod: "default/web", UID: "uid",
			Dial: func(ctx context.Context, port uint16) (PodConn, error) {
				i := int(port) - fuzzBasePort
				dials.Add(1)
				srv, pod := net.Pipe()
				pods.Go(func() { got[i], _ = echoingPod(pod, len(want[i])) })
				return pipePodConn{srv}, nil
			}}
		for i := range ports {
			cfg.Ports = append(cfg.Ports, uint16(fuzzBasePort+i))
		}
		outc := collectServer(br)
		served := make(chan struct{})
		go func() {
			ServeChannels(context.Background(), ws, cfg)
			close(served)
		}()
		go func() {
			for _, m := range frames {
				if _, err := cli.Write(m); err != nil {
					return
				}
			}
		}()
		select {
		case <-served:
		case <-time.After(15 * time.Second):
			t.Fatal("ServeChannels did not return after every pod closed")
		}
		out := waitOutput(t, outc)
		pods.Wait()
		if int(dials.Load()) != ports {
			t.Fatalf("%d dials for %d ports", dials.Load(), ports)
		}
		for i := range ports {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("pod of port %d received\n%q\nwant (as the kubelet delivers)\n%q", i, got[i], want[i])
			}
		}
		checkChannelOutput(t, out.msgs, b64, cfg.Ports, got, pings)
	})
}

// checkChannelOutput checks what the server sent on a v4 WebSocket whose
// dials all succeeded: the port announcements, then each pod's bytes in
// order on its data channel, pongs for the pings, a close frame 1000 last.
func checkChannelOutput(t *testing.T, msgs []wsMessage, b64 bool, ports []uint16, echoed [][]byte, pings [][]byte) {
	t.Helper()
	wantType := byte(opBinary)
	if b64 {
		wantType = opText
	}
	var pongs [][]byte
	back := make([][]byte, len(ports))
	data := 0 // data messages seen
	for i, m := range msgs {
		switch m.opcode {
		case opPong:
			pongs = append(pongs, m.payload)
			continue
		case opClose:
			if i != len(msgs)-1 || len(m.payload) < 2 || binary.BigEndian.Uint16(m.payload) != 1000 {
				t.Fatalf("message %d: close frame %x; want 1000, last", i, m.payload)
			}
			continue
		case wantType:
		default:
			t.Fatalf("message %d: opcode %d, want %d", i, m.opcode, wantType)
		}
		if len(m.payload) == 0 {
			t.Fatalf("message %d: empty", i)
		}
		ch, payload := m.payload[0], m.payload[1:]
		if b64 {
			ch -= '0'
			d, err := base64.StdEncoding.DecodeString(string(payload))
			if err != nil {
				t.Fatalf("message %d: %q is not base64: %v", i, payload, err)
			}
			payload = d
		}
		if data < 2*len(ports) {
			// Announcements: port p on channel 2p, then on 2p+1.
			p := data / 2
			want := binary.LittleEndian.AppendUint16(nil, ports[p])
			if int(ch) != data || !bytes.Equal(payload, want) {
				t.Fatalf("message %d: channel %d %x; want channel %d announcing port %d", i, ch, payload, data, ports[p])
			}
			data++
			continue
		}
		data++
		if ch%2 != 0 || int(ch)/2 >= len(ports) {
			t.Fatalf("message %d: channel %d (%q), want a data channel of %d ports", i, ch, payload, len(ports))
		}
		back[ch/2] = append(back[ch/2], payload...)
	}
	if len(msgs) == 0 || msgs[len(msgs)-1].opcode != opClose {
		t.Fatalf("no close frame at the end of %d messages", len(msgs))
	}
	for p := range ports {
		if !bytes.Equal(back[p], echoed[p]) {
			t.Fatalf("port %d: client got back %q, the pod sent %q", p, back[p], echoed[p])
		}
	}
	if len(pings) <= maxPendingPongs {
		if fmt.Sprintf("%q", pongs) != fmt.Sprintf("%q", pings) {
			t.Fatalf("pongs %q, want the pings' payloads %q", pongs, pings)
		}
		return
	}
	// More pings than wait for their pongs: the oldest waiting may be
	// dropped (RFC 6455 §5.5.3), never the last, never out of order.
	i := 0
	for _, p := range pongs {
		for i < len(pings) && !bytes.Equal(pings[i], p) {
			i++
		}
		if i == len(pings) {
			t.Fatalf("pongs %q: not the pings' payloads %q in order", pongs, pings)
		}
		i++
	}
	if len(pongs) == 0 || !bytes.Equal(pongs[len(pongs)-1], pings[len(pings)-1]) {
		t.Fatalf("pongs %q: the last ping (%q) not answered", pongs, pings[len(pings)-1])
	}
}

// FuzzChannelWire feeds arbitrary bytes as the client's side of a v4
// WebSocket, then closes it. Whatever the bytes, ServeChannels must return
// and close every pod connection, and the pods together never receive
// more bytes than the client sent.
func FuzzChannelWire(f *testing.F) {
	var ws []byte
	ws = append(ws, clientMessage(opBinary, []byte("\x00GET / HTTP/1.1\r\n\r\n"), false)...)
	ws = append(ws, clientFrame(true, opPing, []byte("k"), 7)...)
	ws = append(ws, clientMessage(opBinary, []byte("\x02second port"), true)...)
	ws = append(ws, clientFrame(true, opClose, []byte{0x03, 0xe8}, 9)...)
	f.Add(false, ws)
	var b64 []byte
	b64 = append(b64, clientMessage(opText, encodeChannel(true, 0, []byte("GET / HTTP/1.1\r\n\r\n")), false)...)
	b64 = append(b64, clientMessage(opText, []byte("0QUJD!!!!"), true)...)
	b64 = append(b64, clientMessage(opText, encodeChannel(true, 2, bytes.Repeat([]byte("x"), 200)), false)...)
	f.Add(true, b64)
	f.Add(false, clientFrame(false, opContinuation, []byte("\x00x"), 0))
	f.Add(true, []byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b64 bool, in []byte) {
		ws, cli, br := pipeWebSocket(t)
		var received atomic.Int64
		var pods sync.WaitGroup
		cfg := ChannelConfig{Ports: []uint16{fuzzBasePort, fuzzBasePort + 1}, Base64: b64,
			Dial: func(ctx context.Context, port uint16) (PodConn, error) {
				srv, pod := net.Pipe()
				pods.Go(func() {
					n, _ := io.Copy(io.Discard, pod) // ends when the server closes it
					received.Add(n)
				})
				return pipePodConn{srv}, nil
			}}
		go io.Copy(io.Discard, br)
		served := make(chan struct{})
		go func() {
			ServeChannels(context.Background(), ws, cfg)
			close(served)
		}()
		cli.Write(in)
		cli.Close()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeChannels did not return after the client closed")
		}
		done := make(chan struct{})
		go func() {
			pods.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a pod connection was left open after ServeChannels returned")
		}
		if n := received.Load(); n > int64(len(in)) {
			t.Fatalf("pods received %d bytes from %d client bytes", n, len(in))
		}
	})
}
