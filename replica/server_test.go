package replica

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/replica/framed"
)

// serve starts a Server over an in-memory listener for the replica of
// volume "v1" and returns a client.
func serve(t *testing.T, r *Replica) brickpb.ReplicaClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	brickpb.RegisterReplicaServer(srv, NewServer(func(id string) (*Replica, error) {
		if id != "v1" {
			return nil, fmt.Errorf("%w: %s", ErrNoReplica, id)
		}
		return r, nil
	}, testLogger(t)))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return brickpb.NewReplicaClient(conn)
}

func ref(epoch uint64) *brickpb.VolumeRef {
	return &brickpb.VolumeRef{
		Header:   &brickpb.Header{ProtocolVersion: brickpb.ProtocolVersion, SenderId: "test"},
		VolumeId: "v1", Epoch: epoch,
	}
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Errorf("%s: %v, want %s", what, err, code)
	}
}

func TestServer(t *testing.T) {
	r := newTest(t)
	c := serve(t, r)
	ctx := context.Background()

	fr, err := c.Fence(ctx, &brickpb.FenceRequest{Ref: ref(2)})
	if err != nil || fr.PromisedEpoch != 2 {
		t.Fatalf("Fence: %v %v", fr, err)
	}

	stream, err := c.Replicate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ops := []*brickpb.Op{
		{Seq: 1, Epoch: 2, Type: brickpb.OpType_OP_CREATE, Parent: 1, Name: "f", Fid: 2, Mode: 0o644},
		{Seq: 2, Epoch: 2, Type: brickpb.OpType_OP_WRITE, Fid: 2, Data: []byte("hi")},
		{Seq: 3, Epoch: 2, Type: brickpb.OpType_OP_CREATE, Parent: 1, Name: "f", Fid: 3},
	}
	if err := stream.Send(&brickpb.ReplicateRequest{Open: ref(2), Ops: ops[:2]}); err != nil {
		t.Fatal(err)
	}
	ack, err := stream.Recv()
	if err != nil || ack.AppliedSeq != 2 || len(ack.Results) != 2 || ack.Error != "" {
		t.Fatalf("first ack: %v %v", ack, err)
	}
	if err := stream.Send(&brickpb.ReplicateRequest{Ops: append(ops[2:], &brickpb.Op{Seq: 4, Epoch: 2, Type: brickpb.OpType_OP_SYNC})}); err != nil {
		t.Fatal(err)
	}
	ack, err = stream.Recv()
	if err != nil || ack.AppliedSeq != 4 || ack.SyncedSeq != 4 || ack.Results[0].Errno != 17 {
		t.Fatalf("second ack (EEXIST, then a sync): %v %v", ack, err)
	}
	// A gap ends the stream: ack with the error, then OutOfRange.
	if err := stream.Send(&brickpb.ReplicateRequest{Ops: []*brickpb.Op{{Seq: 9, Epoch: 2, Type: brickpb.OpType_OP_SYNC}}}); err != nil {
		t.Fatal(err)
	}
	ack, err = stream.Recv()
	if err != nil || ack.Error == "" || ack.AppliedSeq != 4 {
		t.Fatalf("ack of a gap: %v %v", ack, err)
	}
	_, err = stream.Recv()
	wantCode(t, "stream after a gap", err, codes.OutOfRange)

	// Reads.
	mr, err := c.Meta(ctx, &brickpb.MetaRequest{Ref: ref(2), AfterSeq: 4, Kind: brickpb.MetaKind_META_LOOKUP, Parent: 1, Name: "f"})
	if err != nil || mr.Attr.Fid != 2 || mr.Attr.Size != 2 {
		t.Errorf("Meta: %v %v", mr, err)
	}
	rr, err := c.Read(ctx, &brickpb.ReadRequest{Ref: ref(2), AfterSeq: 4, Fid: 2, Size: 10})
	if err != nil || string(rr.Data) != "hi" {
		t.Errorf("Read: %v %v", rr, err)
	}
	ostream, err := c.OpsSince(ctx, &brickpb.OpsSinceRequest{Ref: ref(2), AfterSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for {
		op, err := ostream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, op.Seq)
	}
	if fmt.Sprint(got) != "[2 3 4]" {
		t.Errorf("OpsSince(1) streamed %v", got)
	}

	// Fencing: a new epoch shuts the old head out of streams and reads.
	if _, err := c.Fence(ctx, &brickpb.FenceRequest{Ref: ref(3)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Meta(ctx, &brickpb.MetaRequest{Ref: ref(2), Kind: brickpb.MetaKind_META_STATFS})
	wantCode(t, "Meta at a fenced epoch", err, codes.FailedPrecondition)
	if want := "fenced: epoch 2 is older than the brick's promise 3"; !strings.Contains(fmt.Sprint(err), want) {
		t.Errorf("fenced message: %v, want %q", err, want)
	}
	_, err = c.Read(ctx, &brickpb.ReadRequest{Ref: ref(2), Fid: 2})
	wantCode(t, "Read at a fenced epoch", err, codes.FailedPrecondition)
	ostream, _ = c.OpsSince(ctx, &brickpb.OpsSinceRequest{Ref: ref(2)})
	_, err = ostream.Recv()
	wantCode(t, "OpsSince at a fenced epoch", err, codes.FailedPrecondition)
	stream, _ = c.Replicate(ctx)
	stream.Send(&brickpb.ReplicateRequest{Open: ref(2)})
	ack, err = stream.Recv()
	if err != nil || !strings.HasPrefix(ack.Error, "fenced: ") || ack.Errno == 0 {
		t.Errorf("ack of a stale open: %v %v", ack, err)
	}
	_, err = stream.Recv()
	wantCode(t, "stream opened at a fenced epoch", err, codes.FailedPrecondition)
	// Ops of another epoch than the stream's.
	stream, _ = c.Replicate(ctx)
	stream.Send(&brickpb.ReplicateRequest{Open: ref(3), Ops: []*brickpb.Op{{Seq: 5, Epoch: 4, Type: brickpb.OpType_OP_SYNC}}})
	stream.Recv()
	_, err = stream.Recv()
	wantCode(t, "op of another epoch", err, codes.InvalidArgument)

	// Bad requests.
	bad := ref(3)
	bad.Header = nil
	_, err = c.Fence(ctx, &brickpb.FenceRequest{Ref: bad})
	wantCode(t, "no header", err, codes.InvalidArgument)
	bad = ref(3)
	bad.Header.ProtocolVersion = 99
	_, err = c.Meta(ctx, &brickpb.MetaRequest{Ref: bad})
	wantCode(t, "protocol 99", err, codes.Unimplemented)
	bad = ref(3)
	bad.VolumeId = "../etc"
	_, err = c.Fence(ctx, &brickpb.FenceRequest{Ref: bad})
	wantCode(t, "bad volume ID", err, codes.InvalidArgument)
	bad.VolumeId = "v2"
	_, err = c.Fence(ctx, &brickpb.FenceRequest{Ref: bad})
	wantCode(t, "unknown volume", err, codes.NotFound)
	_, err = c.Fence(ctx, &brickpb.FenceRequest{})
	wantCode(t, "no ref", err, codes.InvalidArgument)
	stream, _ = c.Replicate(ctx)
	stream.Send(&brickpb.ReplicateRequest{})
	_, err = stream.Recv()
	wantCode(t, "stream without open", err, codes.InvalidArgument)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = c.Read(short, &brickpb.ReadRequest{Ref: ref(3), AfterSeq: 1000})
	wantCode(t, "read of a seq that never comes", err, codes.DeadlineExceeded)
}

// TestServeReplicateFramed: the replication stream on its own connection
// (package framed) means what it means over gRPC: acks with the results,
// and the stream's end carrying the status a gRPC stream would.
func TestServeReplicateFramed(t *testing.T) {
	r := newTest(t)
	srv := NewServer(func(id string) (*Replica, error) {
		if id != "v1" {
			return nil, fmt.Errorf("%w: %s", ErrNoReplica, id)
		}
		return r, nil
	}, testLogger(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := framed.NewServer(func(st *framed.ServerStream) error { return srv.ServeReplicate(st) })
	go fs.Serve(ln)
	t.Cleanup(func() { ln.Close(); fs.Close() })
	open := func(ref *brickpb.VolumeRef) *framed.Client {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		cl, err := framed.Open(c, ref)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	if _, err := r.Fence(2); err != nil {
		t.Fatal(err)
	}

	cl := open(ref(2))
	if ack, err := cl.Recv(); err != nil || ack.AppliedSeq != 0 {
		t.Fatalf("ack of the open: %v %v", ack, err)
	}
	if err := cl.Send(&brickpb.ReplicateRequest{Ops: []*brickpb.Op{
		{Seq: 1, Epoch: 2, Type: brickpb.OpType_OP_CREATE, Parent: 1, Name: "f", Fid: 2, Mode: 0o644},
		{Seq: 2, Epoch: 2, Type: brickpb.OpType_OP_CREATE, Parent: 1, Name: "f", Fid: 3},
		{Seq: 3, Epoch: 2, Type: brickpb.OpType_OP_SYNC},
	}}); err != nil {
		t.Fatal(err)
	}
	ack, err := cl.Recv()
	if err != nil || ack.AppliedSeq != 3 || ack.SyncedSeq != 3 || len(ack.Results) != 3 || ack.Results[1].Errno != 17 {
		t.Fatalf("ack (a create, EEXIST, a sync): %v %v", ack, err)
	}
	// A gap: ack with the error, then OutOfRange.
	cl.Send(&brickpb.ReplicateRequest{Ops: []*brickpb.Op{{Seq: 9, Epoch: 2, Type: brickpb.OpType_OP_SYNC}}})
	if ack, err := cl.Recv(); err != nil || ack.Error == "" || ack.AppliedSeq != 3 {
		t.Fatalf("ack of a gap: %v %v", ack, err)
	}
	_, err = cl.Recv()
	wantCode(t, "framed stream after a gap", err, codes.OutOfRange)

	// A stale epoch, and a stream without an open.
	if _, err := r.Fence(3); err != nil {
		t.Fatal(err)
	}
	cl = open(ref(2))
	if ack, err := cl.Recv(); err != nil || !strings.HasPrefix(ack.Error, "fenced: ") {
		t.Errorf("ack of a stale open: %v %v", ack, err)
	}
	_, err = cl.Recv()
	wantCode(t, "framed stream opened at a fenced epoch", err, codes.FailedPrecondition)
	cl = open(nil)
	_, err = cl.Recv()
	wantCode(t, "framed stream without open", err, codes.InvalidArgument)
}
