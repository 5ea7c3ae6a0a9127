package framed

import (
	"bytes"
	"net"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

// bigRequest is a batch mixing big writes with small ops, every kind of
// field set somewhere, and an unknown field in one big op.
func bigRequest() *brickpb.ReplicateRequest {
	data := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		return b
	}
	growth := int64(bigData)
	withUnknown := &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Seq: 4, Epoch: 2, Fid: 9, Offset: 1 << 30,
		Data: data(bigData, 3)}
	withUnknown.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 999, protowire.VarintType), 42))
	return &brickpb.ReplicateRequest{Ops: []*brickpb.Op{
		{Type: brickpb.OpType_OP_CREATE, Seq: 1, Epoch: 2, Parent: 1, Name: "ünïcode", Fid: 9, Mode: 0o644},
		{Type: brickpb.OpType_OP_WRITE, Seq: 2, Epoch: 2, Fid: 9, Data: data(1<<20, 1), Growth: &growth, OriginEpoch: 1},
		{Type: brickpb.OpType_OP_SETXATTR, Seq: 3, Epoch: 2, Fid: 9, Xattr: "user.x", Data: []byte("small")},
		withUnknown,
		{Type: brickpb.OpType_OP_WRITE, Seq: 5, Epoch: 2, Fid: 9, Data: data(bigData-1, 5)},
		{Type: brickpb.OpType_OP_SYNC, Seq: 6, Epoch: 2},
	}}
}

// TestBigDataFrames: a batch with big writes, framed with their data
// written from where it is, reads back equal both through proto.Unmarshal
// (what a gRPC stream or an older brick decodes) and through
// decodeRequest, which hands out the big ops' data as slices of the frame
// and copies the rest.
func TestBigDataFrames(t *testing.T) {
	req := bigRequest()
	if !hasBigData(req) {
		t.Fatal("hasBigData: false for a batch with a 1 MiB write")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	errc := make(chan error, 1)
	go func() { errc <- newFrameConn(a).writeRequest(req) }()
	kind, payload, _, err := readFrame(b, nil)
	if err != nil || kind != kindMsg {
		t.Fatalf("reading the frame: kind %d, %v", kind, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	plain := &brickpb.ReplicateRequest{}
	if err := proto.Unmarshal(payload, plain); err != nil || !proto.Equal(plain, req) {
		t.Fatalf("proto.Unmarshal of the frame: %v; equal %v", err, proto.Equal(plain, req))
	}
	got := &brickpb.ReplicateRequest{}
	if err := decodeRequest(payload, got, bigData); err != nil || !proto.Equal(got, req) {
		t.Fatalf("decodeRequest: %v; equal %v", err, proto.Equal(got, req))
	}
	inFrame := func(d []byte) bool {
		p := uintptr(unsafe.Pointer(unsafe.SliceData(payload)))
		q := uintptr(unsafe.Pointer(unsafe.SliceData(d)))
		return q >= p && q < p+uintptr(len(payload))
	}
	for i, op := range got.Ops {
		if big := len(op.Data) >= bigData; big != inFrame(op.Data) {
			t.Errorf("op %d (%d bytes of data): a slice of the frame %v, want %v", i, len(op.Data), !big, big)
		}
		if inFrame(op.Data) && cap(op.Data) != len(op.Data) {
			t.Errorf("op %d: an append to its data could overwrite the frame", i)
		}
	}

	// Batches with no big op, or an open, take the ordinary path.
	for _, r := range []*brickpb.ReplicateRequest{
		{Ops: []*brickpb.Op{{Seq: 1, Data: []byte("x")}}},
		{Open: &brickpb.VolumeRef{VolumeId: "v"}, Ops: req.Ops},
	} {
		if hasBigData(r) {
			t.Errorf("hasBigData(%v): true", r.Open)
		}
	}
}

// FuzzDecodeRequest: decodeRequest accepts exactly what proto.Unmarshal
// accepts and yields an equal request, whatever the bytes (every op with
// data is aliased here, so the fuzzer reaches that path with small
// inputs).
func FuzzDecodeRequest(f *testing.F) {
	small := &brickpb.ReplicateRequest{Ops: []*brickpb.Op{
		{Type: brickpb.OpType_OP_WRITE, Seq: 1, Epoch: 1, Fid: 2, Data: []byte("hello")},
		{Type: brickpb.OpType_OP_CREATE, Seq: 2, Epoch: 1, Name: "n", Data: []byte("d")},
	}}
	b, _ := proto.Marshal(small)
	f.Add(b)
	opened, _ := proto.Marshal(&brickpb.ReplicateRequest{Open: &brickpb.VolumeRef{VolumeId: "v", Epoch: 3}})
	f.Add(opened)
	// An op whose data field comes twice, and one with a long-form length.
	op := protowire.AppendTag(nil, dataField.Number(), protowire.BytesType)
	op = protowire.AppendBytes(op, []byte("a"))
	op = protowire.AppendTag(op, dataField.Number(), protowire.BytesType)
	op = protowire.AppendBytes(op, []byte("b"))
	f.Add(protowire.AppendBytes(protowire.AppendTag(nil, opsField.Number(), protowire.BytesType), op))
	long := protowire.AppendTag(nil, dataField.Number(), protowire.BytesType)
	long = append(long, 0x81, 0x00, 'z') // length 1, in two bytes
	f.Add(protowire.AppendBytes(protowire.AppendTag(nil, opsField.Number(), protowire.BytesType), long))
	f.Fuzz(func(t *testing.T, in []byte) {
		want := &brickpb.ReplicateRequest{}
		werr := proto.Unmarshal(in, want)
		got := &brickpb.ReplicateRequest{}
		gerr := decodeRequest(bytes.Clone(in), got, 1)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("proto.Unmarshal: %v; decodeRequest: %v", werr, gerr)
		}
		if werr == nil && !proto.Equal(want, got) {
			t.Fatalf("decoded differently:\n proto.Unmarshal %v\n decodeRequest   %v", want, got)
		}
	})
}

// A batch ending in a write of whole pages hands that write's data out
// page-aligned (what a brick's O_DIRECT write needs to skip a copy), in a
// fresh frame buffer and in a kept one, after frames big and small.
func TestBigWriteArrivesPageAligned(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	w, r := newFrameConn(a), newFrameConn(b)
	batches := []*brickpb.ReplicateRequest{
		{Ops: []*brickpb.Op{{Type: brickpb.OpType_OP_WRITE, Seq: 1, Fid: 2, Data: make([]byte, 256<<10)}}},
		{Ops: []*brickpb.Op{{Type: brickpb.OpType_OP_CREATE, Seq: 2, Name: "x"}}},
		{Ops: []*brickpb.Op{
			{Type: brickpb.OpType_OP_SETATTR, Seq: 3, Fid: 2},
			{Type: brickpb.OpType_OP_WRITE, Seq: 4, Fid: 2, Offset: 1 << 20, Data: make([]byte, 1<<20)},
		}},
		{Ops: []*brickpb.Op{{Type: brickpb.OpType_OP_WRITE, Seq: 5, Fid: 3, Name: "odd", Data: make([]byte, 128<<10)}}},
	}
	go func() {
		for _, req := range batches {
			if err := w.writeRequest(req); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i, want := range batches {
		kind, payload, err := r.next(false)
		if err != nil || kind != kindMsg {
			t.Fatalf("frame %d: kind %d, %v", i, kind, err)
		}
		got := &brickpb.ReplicateRequest{}
		if err := decodeRequest(payload, got, bigData); err != nil || !proto.Equal(got, want) {
			t.Fatalf("frame %d: %v; equal %v", i, err, proto.Equal(got, want))
		}
		last := got.Ops[len(got.Ops)-1]
		if len(last.Data) < bigData {
			continue
		}
		if p := uintptr(unsafe.Pointer(unsafe.SliceData(last.Data))); p%pageSize != 0 {
			t.Errorf("frame %d: the last write's %d bytes start at %#x, not on a page", i, len(last.Data), p)
		}
	}
}
