// Package framed carries a volume's replication stream (the messages of
// brickpb's Replicate) over a connection of its own, as length-prefixed
// protobuf frames read and written by the goroutines that use them.
//
// gRPC's transport hands every message between goroutines on both ends: a
// reader goroutine reads the frame and wakes the handler, and the handler's
// reply waits for a writer goroutine to write it. On a small host, where
// the head and three bricks share two cores, each of those hand-offs is a
// wake-up and often a context switch, and an fsync barrier crosses four
// of them per brick (two on each end). Here a brick's handler reads its next message from the
// connection itself and writes its ack itself, and the head's sender and
// receiver do the same on their end.
//
// The connection is one that auth.Listener routed by ALPN
// (auth.ProtoReplicate), so it is authenticated with the cluster key like
// every other. What travels on it is exactly what travels on the gRPC
// stream, with the same meaning (replica.Server.ServeReplicate): the first
// request opens the stream, every request is acked, and the end of the
// stream carries a gRPC status.
//
// # Frames
//
// A frame is a 4-byte big-endian payload length, a kind byte and the
// payload. A message frame (kind 1) holds a brickpb.ReplicateRequest (head
// to brick) or brickpb.ReplicateAck (brick to head). An end frame (kind 2),
// sent by the brick as its last, holds a google.rpc.Status: OK for a
// stream that ended cleanly, else the error that ended it. A payload
// beyond MaxPayload, an unknown kind or a payload that does not decode
// ends the stream with an error that says which.
package framed

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"unsafe"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

// MaxPayload is the largest frame payload either end accepts: gRPC's
// message limit on the cluster's connections.
const MaxPayload = 64 << 20

const (
	headerLen = 5
	kindMsg   = 1
	kindEnd   = 2

	// readBuffer is the connection's read buffer: an ack or a batch of
	// small ops arrives in one read.
	readBuffer = 64 << 10
	// keepBuffer is the largest frame buffer kept between frames; a bigger
	// one (a batch of big writes) is dropped after use.
	keepBuffer = 2 << 20
)

// ErrFrame is what a malformed frame is reported as (wrapped).
var ErrFrame = errors.New("malformed replication stream frame")

// frameConn reads and writes frames on one connection.
type frameConn struct {
	c net.Conn
	r *bufio.Reader

	rbuf []byte // payload of the frame last read; unmarshal copies out of it

	wmu  sync.Mutex
	wbuf []byte
}

func newFrameConn(c net.Conn) *frameConn {
	return &frameConn{c: c, r: bufio.NewReaderSize(c, readBuffer)}
}

// write sends m as one frame of kind, in one Write.
func (f *frameConn) write(kind byte, m proto.Message) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	buf, err := proto.MarshalOptions{}.MarshalAppend(append(f.wbuf[:0], 0, 0, 0, 0, 0), m)
	if err != nil {
		return fmt.Errorf("encoding a replication stream message: %w", err)
	}
	n := len(buf) - headerLen
	if n > MaxPayload {
		return fmt.Errorf("%w: a message of %d bytes exceeds the %d-byte limit", ErrFrame, n, MaxPayload)
	}
	binary.BigEndian.PutUint32(buf, uint32(n))
	buf[4] = kind
	_, err = f.c.Write(buf)
	if cap(buf) <= keepBuffer {
		f.wbuf = buf[:0]
	} else {
		f.wbuf = nil
	}
	return err
}

// read reads the next frame into m. An end frame returns its status as
// the error (io.EOF for OK, else a gRPC status error) when ends is set,
// and is malformed when not. A connection that ends between frames also
// returns io.EOF.
func (f *frameConn) read(m proto.Message, ends bool) error {
	kind, payload, err := f.next(ends)
	if err != nil {
		return err
	}
	return decode(kind, payload, m)
}

// next reads the next frame; its payload is valid until the next call.
func (f *frameConn) next(ends bool) (byte, []byte, error) {
	kind, payload, base, err := readFrame(f.r, f.rbuf)
	if err != nil {
		return 0, nil, err
	}
	if kind == kindEnd && !ends {
		return 0, nil, fmt.Errorf("%w: an end-of-stream frame from the head", ErrFrame)
	}
	if cap(base) <= keepBuffer+pageSize {
		f.rbuf = base[:0]
	} else {
		f.rbuf = nil
	}
	return kind, payload, nil
}

// readFrame reads one frame's kind and payload, the payload into buf's
// storage when it fits (placePayload); base is the buffer the payload is
// in, to pass for the next frame.
func readFrame(r io.Reader, buf []byte) (kind byte, payload, base []byte, err error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, nil, fmt.Errorf("%w: the connection ended inside a frame header", ErrFrame)
		}
		return 0, nil, nil, err
	}
	n := binary.BigEndian.Uint32(h[:4])
	if n > MaxPayload {
		return 0, nil, nil, fmt.Errorf("%w: a payload of %d bytes exceeds the %d-byte limit", ErrFrame, n, MaxPayload)
	}
	if h[4] != kindMsg && h[4] != kindEnd {
		return 0, nil, nil, fmt.Errorf("%w: unknown frame kind %d", ErrFrame, h[4])
	}
	base, payload = placePayload(buf, int(n))
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, nil, fmt.Errorf("%w: the connection ended inside a %d-byte payload", ErrFrame, n)
		}
		return 0, nil, nil, err
	}
	return h[4], payload, base, nil
}

// pageSize is the alignment placePayload gives a big frame's end.
const pageSize = 4096

// placePayload returns n bytes of buf, or of a new buffer when buf is too
// small, for a frame's payload. A big payload (bigData or more) ends at a
// page boundary: a big op's data comes last in its frame (bigdata.go) and is
// decoded in place, so a write of whole pages arrives page-aligned, which a
// brick's O_DIRECT write needs (replica.writeDirect; else it copies the data
// once more). It also returns the buffer, to keep.
func placePayload(buf []byte, n int) (base, payload []byte) {
	if n < bigData {
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		return buf, buf[:n]
	}
	if cap(buf) < n+pageSize {
		buf = make([]byte, n+pageSize)
	}
	buf = buf[:cap(buf)]
	end := uintptr(unsafe.Pointer(unsafe.SliceData(buf))) + uintptr(n)
	skip := int((pageSize - end%pageSize) % pageSize)
	return buf, buf[skip : skip+n : skip+n]
}

// decode turns a frame into m or into the status an end frame carries.
func decode(kind byte, payload []byte, m proto.Message) error {
	if kind == kindEnd {
		var st spb.Status
		if err := proto.Unmarshal(payload, &st); err != nil {
			return fmt.Errorf("%w: end of stream: %w", ErrFrame, err)
		}
		if codes.Code(st.Code) == codes.OK {
			return io.EOF
		}
		return status.ErrorProto(&st)
	}
	if err := proto.Unmarshal(payload, m); err != nil {
		return fmt.Errorf("%w: %T: %w", ErrFrame, m, err)
	}
	return nil
}

// Client is the head's end of one brick's stream.
type Client struct {
	f *frameConn
}

// Open starts a stream on c (a connection dialed for auth.ProtoReplicate)
// with the open message for ref. The Client owns c from here on, also when
// Open fails.
func Open(c net.Conn, ref *brickpb.VolumeRef) (*Client, error) {
	cl := &Client{f: newFrameConn(c)}
	if err := cl.Send(&brickpb.ReplicateRequest{Open: ref}); err != nil {
		c.Close()
		return nil, err
	}
	return cl, nil
}

// Send sends one request. Sends may not run concurrently with each other.
func (cl *Client) Send(req *brickpb.ReplicateRequest) error {
	var err error
	if hasBigData(req) {
		err = cl.f.writeRequest(req)
	} else {
		err = cl.f.write(kindMsg, req)
	}
	if err != nil {
		return status.Errorf(codes.Unavailable, "sending on the replication stream: %v", err)
	}
	return nil
}

// Recv returns the next ack. When the brick ended the stream it returns
// io.EOF, or the gRPC status error the brick ended it with; a broken
// connection is codes.Unavailable, as on a gRPC stream. Recvs may not
// run concurrently with each other, but may with Send.
func (cl *Client) Recv() (*brickpb.ReplicateAck, error) {
	ack := &brickpb.ReplicateAck{}
	err := cl.f.read(ack, true)
	if err == nil {
		return ack, nil
	}
	if _, ok := status.FromError(err); ok || err == io.EOF {
		return nil, err
	}
	return nil, status.Errorf(codes.Unavailable, "receiving on the replication stream: %v", err)
}

// Close ends the stream: the brick sees the connection close, as it sees
// a gRPC stream cancelled. Pending Send and Recv calls return.
func (cl *Client) Close() error {
	return cl.f.c.Close()
}

// ServerStream is a brick's end of one stream, handed to the handler.
type ServerStream struct {
	f *frameConn
}

// Recv returns the next request; io.EOF when the head closed the stream
// between messages. A malformed frame is codes.InvalidArgument, a broken
// connection codes.Canceled (the head went away, as a cancelled gRPC
// stream reports it). The data of a big write in it is a slice of the
// stream's read buffer (bigdata.go): it is valid until the next Recv.
func (s *ServerStream) Recv() (*brickpb.ReplicateRequest, error) {
	req := &brickpb.ReplicateRequest{}
	_, payload, err := s.f.next(false)
	if err == nil {
		if derr := decodeRequest(payload, req, bigData); derr != nil {
			err = fmt.Errorf("%w: %T: %w", ErrFrame, req, derr)
		}
	}
	switch {
	case err == nil:
		return req, nil
	case err == io.EOF:
		return nil, err
	case errors.Is(err, ErrFrame):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return nil, status.Errorf(codes.Canceled, "reading the replication stream: %v", err)
}

// Send writes one ack.
func (s *ServerStream) Send(ack *brickpb.ReplicateAck) error {
	if err := s.f.write(kindMsg, ack); err != nil {
		return status.Errorf(codes.Canceled, "sending on the replication stream: %v", err)
	}
	return nil
}

// Server serves streams with a handler.
type Server struct {
	handle func(*ServerStream) error

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewServer serves every stream with handle (replica.Server.ServeReplicate).
// When handle returns, its error (a gRPC status, or nil) is sent as the
// stream's end frame and the connection is closed.
func NewServer(handle func(*ServerStream) error) *Server {
	return &Server{handle: handle, conns: map[net.Conn]struct{}{}}
}

// Serve accepts connections from ln until it is closed, and serves each
// in a goroutine of its own.
func (s *Server) Serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accepting replication stream connections: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

func (s *Server) serveConn(c net.Conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	st := &ServerStream{f: newFrameConn(c)}
	err := s.handle(st)
	_ = st.f.write(kindEnd, status.Convert(err).Proto())
}

// Close closes every stream's connection, as a stopped gRPC server does,
// and waits for their handlers to return. Serve's listener is the
// caller's to close.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
