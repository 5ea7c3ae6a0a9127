package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

// meta.db layout (bbolt). Every record starts with a format byte so the
// layout can change; the decoders below validate everything they return
// (they are fuzzed: FuzzDecode*).
//
//	meta  "format"        u64  metaFormat
//	      "applied"       u64  seq of the last applied op
//	      "applied_epoch" u64  epoch of that op
//	      "synced"        u64  everything up to here was made durable by a sync
//	      "promised"      u64  epoch promise (fence): ops and reads below it are refused
//	      "max_fid"       u64  highest file ID ever created
//	      "log_bytes"     u64  (written by earlier versions; removed)
//	      "intent"        intentRec: the exact op being applied (crash redo)
//	      "clean"         1 byte: 1 after Close, 0 while open
//	      "boot"          the kernel boot ID of the last open
//	      "suspect"       why the tree may differ from "applied" (absent: it does not)
//	dirs  fid(u64 BE) -> dirRec     every directory but the root: parent fid and name
//	log   seq(u64 BE) -> logRec     empty: earlier versions kept the op log here
//	                                (openLog moves it to oplog/, wal.go)
//	sums  fid(u64 BE) chunk(u64 BE) -> sumVal: CRC32C and length of that 1 MiB chunk
var (
	bucketMeta = []byte("meta")
	bucketDirs = []byte("dirs")
	bucketLog  = []byte("log")
	bucketSums = []byte("sums")

	keyFormat       = []byte("format")
	keyApplied      = []byte("applied")
	keyAppliedEpoch = []byte("applied_epoch")
	keySynced       = []byte("synced")
	keyPromised     = []byte("promised")
	keyMaxFID       = []byte("max_fid")
	keyLogBytes     = []byte("log_bytes")
	keyIntent       = []byte("intent")
	keyClean        = []byte("clean")
	keyBoot         = []byte("boot")
	keySuspect      = []byte("suspect")
)

const (
	metaFormat   = 1
	recordFormat = 1
	rootFID      = 1
)

var errBadRecord = errors.New("malformed meta.db record")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func u64Key(v uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v) }

func decodeU64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: u64 of %d bytes", errBadRecord, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// dirRec places a directory: its parent directory and its name there.
type dirRec struct {
	parent uint64
	name   string
}

func encodeDirRec(d dirRec) []byte {
	b := make([]byte, 0, 9+len(d.name))
	b = append(b, recordFormat)
	b = binary.BigEndian.AppendUint64(b, d.parent)
	return append(b, d.name...)
}

func decodeDirRec(b []byte) (dirRec, error) {
	if len(b) < 10 || b[0] != recordFormat {
		return dirRec{}, fmt.Errorf("%w: directory record of %d bytes", errBadRecord, len(b))
	}
	d := dirRec{parent: binary.BigEndian.Uint64(b[1:9]), name: string(b[9:])}
	if d.parent == 0 {
		return dirRec{}, fmt.Errorf("%w: directory record with parent 0", errBadRecord)
	}
	if checkName(d.name) != nil {
		return dirRec{}, fmt.Errorf("%w: directory record with name %q", errBadRecord, d.name)
	}
	return d, nil
}

// intentRec is written (with everything applied before it) just before an
// exact op touches the tree, so that after a crash the brick knows the op
// may be half done and what was at its names before it started.
type intentRec struct {
	seq            uint64
	src, dst       uint64 // file IDs at (parent, name) and (new_parent, new_name); 0: none
	srcDir, dstDir bool
}

func encodeIntent(in intentRec) []byte {
	b := make([]byte, 0, 26)
	b = append(b, recordFormat)
	b = binary.BigEndian.AppendUint64(b, in.seq)
	b = binary.BigEndian.AppendUint64(b, in.src)
	b = binary.BigEndian.AppendUint64(b, in.dst)
	var fl byte
	if in.srcDir {
		fl |= 1
	}
	if in.dstDir {
		fl |= 2
	}
	return append(b, fl)
}

func decodeIntent(b []byte) (intentRec, error) {
	if len(b) != 26 || b[0] != recordFormat || b[25]&^3 != 0 {
		return intentRec{}, fmt.Errorf("%w: intent record of %d bytes", errBadRecord, len(b))
	}
	in := intentRec{
		seq:    binary.BigEndian.Uint64(b[1:9]),
		src:    binary.BigEndian.Uint64(b[9:17]),
		dst:    binary.BigEndian.Uint64(b[17:25]),
		srcDir: b[25]&1 != 0,
		dstDir: b[25]&2 != 0,
	}
	if in.seq == 0 {
		return intentRec{}, fmt.Errorf("%w: intent for seq 0", errBadRecord)
	}
	return in, nil
}

// A log record is the format byte, the CRC32C of the rest, and the op in
// deterministic protobuf encoding.
func encodeLogRec(op *brickpb.Op) ([]byte, error) {
	return appendLogRec(make([]byte, 0, 5+proto.Size(op)), op)
}

// appendLogRec appends op's record to buf, as append does: the record is
// what follows buf's old length. A write op's data is copied once here,
// header first, into one buffer (give it the room: 5 + proto.Size).
func appendLogRec(buf []byte, op *brickpb.Op) ([]byte, error) {
	mo := proto.MarshalOptions{Deterministic: true}
	start := len(buf)
	out, err := mo.MarshalAppend(append(buf, 0, 0, 0, 0, 0), op)
	if err != nil {
		return buf, fmt.Errorf("encoding op %d: %w", op.GetSeq(), err)
	}
	rec := out[start:]
	rec[0] = recordFormat
	binary.BigEndian.PutUint32(rec[1:5], crc32.Checksum(rec[5:], castagnoli))
	return out, nil
}

// logRecTail is the checksum a log record carries of its op's encoding,
// b[5:] (the op log's tailSum).
func logRecTail(b []byte) (head int, sum uint32, ok bool) {
	if len(b) < 5 || b[0] != recordFormat {
		return 0, 0, false
	}
	return 5, binary.BigEndian.Uint32(b[1:5]), true
}

// decodeLogRec decodes the record stored under seq.
func decodeLogRec(seq uint64, b []byte) (*brickpb.Op, error) {
	if len(b) < 5 || b[0] != recordFormat {
		return nil, fmt.Errorf("%w: log record %d of %d bytes", errBadRecord, seq, len(b))
	}
	if crc32.Checksum(b[5:], castagnoli) != binary.BigEndian.Uint32(b[1:5]) {
		return nil, fmt.Errorf("%w: log record %d fails its checksum", errBadRecord, seq)
	}
	op := new(brickpb.Op)
	if err := proto.Unmarshal(b[5:], op); err != nil {
		return nil, fmt.Errorf("%w: log record %d: %v", errBadRecord, seq, err)
	}
	if op.Seq != seq {
		return nil, fmt.Errorf("%w: log record %d holds op %d", errBadRecord, seq, op.Seq)
	}
	return op, nil
}

func sumKey(fid, chunk uint64) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16), fid)
	return binary.BigEndian.AppendUint64(b, chunk)
}

func decodeSumKey(k []byte) (fid, chunk uint64, err error) {
	if len(k) != 16 {
		return 0, 0, fmt.Errorf("%w: checksum key of %d bytes", errBadRecord, len(k))
	}
	return binary.BigEndian.Uint64(k[:8]), binary.BigEndian.Uint64(k[8:]), nil
}
