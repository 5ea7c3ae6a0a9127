package framed

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

// listen serves handle on a loopback listener and returns its address and
// the server.
func listen(t *testing.T, handle func(*ServerStream) error) (string, *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(handle)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), srv
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// echo acks every request with the number of its ops as AppliedSeq, and
// ends the stream with end once it has seen n requests (the open
// included), or cleanly at io.EOF.
func echo(n int, end error, seen chan<- *brickpb.ReplicateRequest) func(*ServerStream) error {
	return func(s *ServerStream) error {
		for i := 0; i < n; i++ {
			req, err := s.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if seen != nil {
				seen <- req
			}
			if err := s.Send(&brickpb.ReplicateAck{AppliedSeq: uint64(len(req.Ops))}); err != nil {
				return err
			}
		}
		return end
	}
}

func TestStreamCarriesMessagesAndItsEnd(t *testing.T) {
	fenced := status.Error(codes.FailedPrecondition, "fenced: epoch 2 is older than the brick's promise 3")
	seen := make(chan *brickpb.ReplicateRequest, 10)
	addr, _ := listen(t, echo(3, fenced, seen))
	ref := &brickpb.VolumeRef{VolumeId: "v1", Epoch: 2}
	cl, err := Open(dial(t, addr), ref)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got := <-seen; !proto.Equal(got.Open, ref) {
		t.Fatalf("open message arrived as %v", got)
	}
	if ack, err := cl.Recv(); err != nil || ack.AppliedSeq != 0 {
		t.Fatalf("ack of the open: %v %v", ack, err)
	}
	// A big message (several TLS records' worth, past the read buffer)
	// and a small one.
	big := &brickpb.ReplicateRequest{Ops: []*brickpb.Op{{Seq: 1, Data: bytes.Repeat([]byte("x"), 3<<20)}, {Seq: 2}}}
	small := &brickpb.ReplicateRequest{Ops: []*brickpb.Op{{Seq: 3, Name: "f"}}}
	for _, req := range []*brickpb.ReplicateRequest{big, small} {
		if err := cl.Send(req); err != nil {
			t.Fatal(err)
		}
		if got := <-seen; !proto.Equal(got, req) {
			t.Fatalf("request arrived changed (%d ops)", len(got.Ops))
		}
		if ack, err := cl.Recv(); err != nil || ack.AppliedSeq != uint64(len(req.Ops)) {
			t.Fatalf("ack: %v %v", ack, err)
		}
	}
	_, err = cl.Recv()
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "fenced: epoch 2") {
		t.Fatalf("end of a fenced stream: %v, want the handler's status", err)
	}
}

func TestCleanEnds(t *testing.T) {
	// The handler returns nil: the client reads io.EOF.
	addr, _ := listen(t, echo(1, nil, nil))
	cl, err := Open(dial(t, addr), &brickpb.VolumeRef{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Recv(); err != io.EOF {
		t.Fatalf("after a clean end: %v, want io.EOF", err)
	}

	// The client closes between messages: the handler's Recv says io.EOF
	// or Canceled, never a malformed frame.
	got := make(chan error, 1)
	addr, _ = listen(t, func(s *ServerStream) error {
		_, err := s.Recv()
		if err == nil {
			_, err = s.Recv()
		}
		got <- err
		return err
	})
	cl, err = Open(dial(t, addr), &brickpb.VolumeRef{})
	if err != nil {
		t.Fatal(err)
	}
	cl.Close()
	if err := <-got; err != io.EOF && status.Code(err) != codes.Canceled {
		t.Fatalf("handler saw a closed client as %v", err)
	}
}

func TestCloseEndsEveryStream(t *testing.T) {
	entered := make(chan struct{})
	ended := make(chan error, 1)
	addr, srv := listen(t, func(s *ServerStream) error {
		close(entered)
		for {
			if _, err := s.Recv(); err != nil {
				ended <- err
				return err
			}
		}
	})
	cl, err := Open(dial(t, addr), &brickpb.VolumeRef{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	<-entered
	srv.Close() // returns only once the handler has
	if err := <-ended; status.Code(err) != codes.Canceled {
		t.Fatalf("handler of a closed server's stream ended with %v, want Canceled", err)
	}
	// The client hears of it, not from its own deadline.
	if _, err := cl.Recv(); err == nil || strings.Contains(err.Error(), "timeout") ||
		status.Code(err) != codes.Unavailable && err != io.EOF {
		t.Fatalf("client of a closed server: %v", err)
	}
	// A connection accepted after Close is closed at once.
	c := dial(t, addr)
	defer c.Close()
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a connection after Close was served (read: %v)", err)
	}
}

func TestMalformedFramesChangeNothing(t *testing.T) {
	frame := func(n uint32, kind byte, payload []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, n)
		return append(append(b, kind), payload...)
	}
	good, _ := proto.Marshal(&brickpb.ReplicateRequest{Open: &brickpb.VolumeRef{VolumeId: "v1"}})
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"too big", frame(MaxPayload+1, kindMsg, nil), "exceeds the 67108864-byte limit"},
		{"unknown kind", frame(uint32(len(good)), 7, good), "unknown frame kind 7"},
		{"not a message", frame(3, kindMsg, []byte{0xff, 0xff, 0xff}), "ReplicateRequest"},
		{"end frame from the head", frame(0, kindEnd, nil), "end-of-stream frame from the head"},
		{"truncated payload", frame(100, kindMsg, good), "inside a 100-byte payload"},
		{"truncated header", []byte{0, 0}, "inside a frame header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			handled := make(chan error, 1)
			addr, _ := listen(t, func(s *ServerStream) error {
				req, err := s.Recv()
				if err == nil {
					err = errors.New("a request came through: " + req.String())
				}
				handled <- err
				return err
			})
			c := dial(t, addr)
			defer c.Close()
			c.Write(tc.in)
			if tc.name == "truncated payload" || tc.name == "truncated header" {
				c.(*net.TCPConn).CloseWrite()
			}
			err := <-handled
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("handler got %v, want InvalidArgument saying %q", err, tc.want)
			}
			// The head hears why, in the end frame.
			cl := &Client{f: newFrameConn(c)}
			if _, err := cl.Recv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("end frame: %v", err)
			}
		})
	}
}

func TestOversizedSendRefused(t *testing.T) {
	addr, _ := listen(t, echo(10, nil, nil))
	cl, err := Open(dial(t, addr), &brickpb.VolumeRef{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	huge := &brickpb.ReplicateRequest{Ops: []*brickpb.Op{{Data: make([]byte, MaxPayload)}}}
	if err := cl.Send(huge); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("sending %d bytes: %v", proto.Size(huge), err)
	}
	// Nothing was sent: the stream still works.
	if err := cl.Send(&brickpb.ReplicateRequest{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if ack, err := cl.Recv(); err != nil || ack.AppliedSeq != 0 {
			t.Fatalf("ack %d after a refused send: %v %v", i, ack, err)
		}
	}
}

// FuzzReadFrames feeds arbitrary bytes to the frame reader: it must return
// frames or an error, never panic or allocate past the limit, and a
// message it decodes must encode and decode to the same message.
func FuzzReadFrames(f *testing.F) {
	msg, _ := proto.Marshal(&brickpb.ReplicateAck{AppliedSeq: 7, Results: []*brickpb.OpResult{{Errno: 2}}})
	end, _ := proto.Marshal(status.New(codes.OutOfRange, "gap").Proto())
	seed := binary.BigEndian.AppendUint32(nil, uint32(len(msg)))
	seed = append(append(seed, kindMsg), msg...)
	seed = binary.BigEndian.AppendUint32(seed, uint32(len(end)))
	seed = append(append(seed, kindEnd), end...)
	f.Add(seed)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Add([]byte{0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		var buf []byte
		for {
			kind, payload, base, err := readFrame(r, buf)
			if err != nil {
				return
			}
			buf = base
			ack := &brickpb.ReplicateAck{}
			if err := decode(kind, payload, ack); err != nil {
				if kind == kindMsg && !errors.Is(err, ErrFrame) {
					t.Fatalf("message decode error does not wrap ErrFrame: %v", err)
				}
				continue
			}
			again, err := proto.Marshal(ack)
			if err != nil {
				t.Fatalf("re-encoding a decoded ack: %v", err)
			}
			back := &brickpb.ReplicateAck{}
			if err := proto.Unmarshal(again, back); err != nil || !proto.Equal(ack, back) {
				t.Fatalf("ack changed through a round trip: %v", err)
			}
		}
	})
}
