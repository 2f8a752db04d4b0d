package spdy

import (
	"encoding/binary"
	"fmt"
)

// Frame types and flags of SPDY/3 (draft-mbelshe-httpbis-spdy-00 and the
// SPDY/3.1 additions).
const (
	version = 3

	typeSynStream    = 1
	typeSynReply     = 2
	typeRstStream    = 3
	typeSettings     = 4
	typePing         = 6
	typeGoAway       = 7
	typeHeaders      = 8
	typeWindowUpdate = 9

	flagFin            = 0x01
	flagUnidirectional = 0x02

	frameHeaderLen = 8
	maxFrameLength = 1<<24 - 1
	maxStreamID    = 1<<31 - 1

	settingsInitialWindowSize = 7
)

// RST_STREAM status codes.
const (
	statusProtocolError      = 1
	statusInvalidStream      = 2
	statusRefusedStream      = 3
	statusUnsupportedVersion = 4
	statusCancel             = 5
	statusInternalError      = 6
	statusFlowControlError   = 7
	statusStreamInUse        = 8
	statusStreamAlreadyClose = 9
	statusFrameTooLarge      = 11
)

// GOAWAY status codes.
const (
	goAwayOK            = 0
	goAwayProtocolError = 1
	goAwayInternalError = 2
)

// frameHeader is the first eight bytes of every frame.
type frameHeader struct {
	control bool
	version uint16 // control frames
	typ     uint16 // control frames
	stream  uint32 // data frames
	flags   uint8
	length  uint32
}

func parseFrameHeader(b []byte) frameHeader {
	w0 := binary.BigEndian.Uint32(b[0:4])
	w1 := binary.BigEndian.Uint32(b[4:8])
	h := frameHeader{flags: uint8(w1 >> 24), length: w1 & 0xffffff}
	if w0&0x80000000 != 0 {
		h.control = true
		h.version = uint16(w0>>16) & 0x7fff
		h.typ = uint16(w0)
	} else {
		h.stream = w0 & 0x7fffffff
	}
	return h
}

// appendControlHeader appends a control frame header.
func appendControlHeader(b []byte, typ uint16, flags uint8, length int) []byte {
	b = binary.BigEndian.AppendUint32(b, 0x80000000|version<<16|uint32(typ))
	return binary.BigEndian.AppendUint32(b, uint32(flags)<<24|uint32(length))
}

// appendDataHeader appends a DATA frame header.
func appendDataHeader(b []byte, stream uint32, flags uint8, length int) []byte {
	b = binary.BigEndian.AppendUint32(b, stream&0x7fffffff)
	return binary.BigEndian.AppendUint32(b, uint32(flags)<<24|uint32(length))
}

func appendRstStream(b []byte, stream, status uint32) []byte {
	b = appendControlHeader(b, typeRstStream, 0, 8)
	b = binary.BigEndian.AppendUint32(b, stream&0x7fffffff)
	return binary.BigEndian.AppendUint32(b, status)
}

func appendPing(b []byte, id uint32) []byte {
	b = appendControlHeader(b, typePing, 0, 4)
	return binary.BigEndian.AppendUint32(b, id)
}

func appendGoAway(b []byte, lastGood, status uint32) []byte {
	b = appendControlHeader(b, typeGoAway, 0, 8)
	b = binary.BigEndian.AppendUint32(b, lastGood&0x7fffffff)
	return binary.BigEndian.AppendUint32(b, status)
}

func appendWindowUpdate(b []byte, stream, delta uint32) []byte {
	b = appendControlHeader(b, typeWindowUpdate, 0, 8)
	b = binary.BigEndian.AppendUint32(b, stream&0x7fffffff)
	return binary.BigEndian.AppendUint32(b, delta&0x7fffffff)
}

func appendSettings(b []byte, id, value uint32) []byte {
	b = appendControlHeader(b, typeSettings, 0, 12)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, id&0xffffff)
	return binary.BigEndian.AppendUint32(b, value)
}

// appendSynReply appends a SYN_REPLY whose compressed header block is
// block.
func appendSynReply(b []byte, stream uint32, block []byte) []byte {
	b = appendControlHeader(b, typeSynReply, 0, 4+len(block))
	b = binary.BigEndian.AppendUint32(b, stream&0x7fffffff)
	return append(b, block...)
}

// connError ends the connection with GOAWAY; streamError resets one
// stream. Both carry the status to send.
type connError struct {
	status uint32
	msg    string
}

func (e *connError) Error() string { return "spdy: " + e.msg }

type streamError struct {
	stream uint32
	status uint32
	msg    string
}

func (e *streamError) Error() string { return fmt.Sprintf("spdy: stream %d: %s", e.stream, e.msg) }

func protocolError(format string, args ...any) *connError {
	return &connError{status: goAwayProtocolError, msg: fmt.Sprintf(format, args...)}
}
