package framed

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/brickvol/brick/proto/brickpb"
)

// Big writes (a sequential writer's 1 MiB requests) dominate what the
// stream carries by bytes. Marshalling a request copies every op's data
// into the frame, once per brick, and unmarshalling copies it out again on
// every brick; a profile of a 1 GiB sequential write put a sixth of the
// mount process's CPU in the first copy and a tenth of each brick's in the
// second. So an op with at least bigData bytes of data is framed with its
// data written from where it is, and read back as a slice of the frame
// that carried it. The bytes on the wire are a valid ReplicateRequest
// either way (protobuf fields may come in any order; data comes last).

// bigData is the data length from which an op's data is neither copied
// into nor out of its frame.
const bigData = 64 << 10

var (
	opsField  = (&brickpb.ReplicateRequest{}).ProtoReflect().Descriptor().Fields().ByName("ops")
	dataField = (&brickpb.Op{}).ProtoReflect().Descriptor().Fields().ByName("data")
)

// hasBigData reports whether req is a batch of ops (no open) with at least
// one big op.
func hasBigData(req *brickpb.ReplicateRequest) bool {
	if req.Open != nil || len(req.ProtoReflect().GetUnknown()) > 0 {
		return false
	}
	for _, op := range req.Ops {
		if len(op.GetData()) >= bigData {
			return true
		}
	}
	return false
}

// withoutData is op with every field but data (it is only read).
func withoutData(op *brickpb.Op) *brickpb.Op {
	h := &brickpb.Op{}
	hm := h.ProtoReflect()
	op.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Number() != dataField.Number() {
			hm.Set(fd, v)
		}
		return true
	})
	if u := op.ProtoReflect().GetUnknown(); len(u) > 0 {
		hm.SetUnknown(u)
	}
	return h
}

// writeRequest sends req (hasBigData) as one frame: the headers go through
// the kept buffer, each big op's data straight from the op. Several
// Writes, but the connection is this stream's alone and Sends do not run
// concurrently.
func (f *frameConn) writeRequest(req *brickpb.ReplicateRequest) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	type piece struct {
		at   int // the data goes after buf[:at]
		data []byte
	}
	var pieces []piece
	buf := append(f.wbuf[:0], 0, 0, 0, 0, kindMsg)
	n := 0 // payload bytes not in buf
	for _, op := range req.Ops {
		var err error
		buf = protowire.AppendTag(buf, opsField.Number(), protowire.BytesType)
		if len(op.GetData()) < bigData {
			buf = protowire.AppendVarint(buf, uint64(proto.Size(op)))
			if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf, op); err != nil {
				return fmt.Errorf("encoding a replication stream message: %w", err)
			}
			continue
		}
		h := withoutData(op)
		size := proto.Size(h) + protowire.SizeTag(dataField.Number()) + protowire.SizeBytes(len(op.Data))
		buf = protowire.AppendVarint(buf, uint64(size))
		if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf, h); err != nil {
			return fmt.Errorf("encoding a replication stream message: %w", err)
		}
		buf = protowire.AppendTag(buf, dataField.Number(), protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(len(op.Data)))
		pieces = append(pieces, piece{len(buf), op.Data})
		n += len(op.Data)
	}
	n += len(buf) - headerLen
	if n > MaxPayload {
		return fmt.Errorf("%w: a message of %d bytes exceeds the %d-byte limit", ErrFrame, n, MaxPayload)
	}
	binary.BigEndian.PutUint32(buf, uint32(n))
	from := 0
	var err error
	for _, p := range pieces {
		if _, err = f.c.Write(buf[from:p.at]); err != nil {
			break
		}
		if _, err = f.c.Write(p.data); err != nil {
			break
		}
		from = p.at
	}
	if err == nil && from < len(buf) {
		_, err = f.c.Write(buf[from:])
	}
	if cap(buf) <= keepBuffer {
		f.wbuf = buf[:0]
	} else {
		f.wbuf = nil
	}
	return err
}

// decodeRequest decodes a ReplicateRequest frame into req as
// proto.Unmarshal would, except that the data of an op with at least
// minAlias bytes of it (bigData; tests go lower) is a slice of payload,
// not a copy: it is valid only while payload is. Anything but a plain
// batch of ops (an open, unknown fields, an op whose data field repeats)
// is left to proto.Unmarshal, whole.
func decodeRequest(payload []byte, req *brickpb.ReplicateRequest, minAlias int) error {
	ops, ok := splitOps(payload)
	if !ok {
		return proto.Unmarshal(payload, req)
	}
	req.Ops = make([]*brickpb.Op, 0, len(ops))
	var hdr []byte
	for _, b := range ops {
		op := &brickpb.Op{}
		start, end := dataSpan(b)
		if end-start < max(minAlias, 1) {
			if err := proto.Unmarshal(b, op); err != nil {
				return err
			}
		} else {
			// The op's other fields, in their order, without the data
			// field (tag and length before start: cut from the field's
			// beginning, which dataSpan found).
			fieldAt := start - protowire.SizeTag(dataField.Number()) - protowire.SizeVarint(uint64(end-start))
			hdr = append(append(hdr[:0], b[:fieldAt]...), b[end:]...)
			if err := proto.Unmarshal(hdr, op); err != nil {
				return err
			}
			op.Data = b[start:end:end]
		}
		req.Ops = append(req.Ops, op)
	}
	return nil
}

// splitOps returns the encoded ops of a payload that holds nothing but
// well-formed ops fields; false for anything else.
func splitOps(payload []byte) ([][]byte, bool) {
	var ops [][]byte
	for len(payload) > 0 {
		num, typ, n := protowire.ConsumeTag(payload)
		if n < 0 || num != opsField.Number() || typ != protowire.BytesType {
			return nil, false
		}
		v, m := protowire.ConsumeBytes(payload[n:])
		if m < 0 {
			return nil, false
		}
		ops = append(ops, v)
		payload = payload[n+m:]
	}
	return ops, true
}

// dataSpan finds the value of op's one data field, encoded minimally
// (tag, then a varint length of minimal size); start == end when there is
// none, it repeats, or op does not parse, which leaves op to
// proto.Unmarshal.
func dataSpan(op []byte) (start, end int) {
	found := false
	for off := 0; off < len(op); {
		num, typ, n := protowire.ConsumeTag(op[off:])
		if n < 0 {
			return 0, 0
		}
		m := protowire.ConsumeFieldValue(num, typ, op[off+n:])
		if m < 0 {
			return 0, 0
		}
		if num == dataField.Number() {
			if found || typ != protowire.BytesType || n != protowire.SizeTag(num) {
				return 0, 0
			}
			v, vn := protowire.ConsumeBytes(op[off+n:])
			if vn < 0 || vn != protowire.SizeVarint(uint64(len(v)))+len(v) {
				return 0, 0
			}
			found = true
			start, end = off+n+vn-len(v), off+n+vn
		}
		off += n + m
	}
	return start, end
}
