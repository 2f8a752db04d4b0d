package cri

import "fmt"

// frame is one gRPC message as the bytes on the wire.
type frame struct{ payload []byte }

// rawCodec passes messages through without decoding them. It is named
// "proto" so that both legs keep the content type application/grpc+proto
// that CRI peers expect.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return f.payload, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	f.payload = data
	return nil
}
