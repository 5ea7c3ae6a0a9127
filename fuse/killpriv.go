package fuse

import (
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// Set-ID bits and FUSE_HANDLE_KILLPRIV_V2.
//
// A write, truncate or chown by a caller without CAP_FSETID clears a
// file's set-user-ID bit, and its set-group-ID bit when the group may
// execute. Left to itself the kernel does that for a FUSE file system by
// reading the file's attributes before every chown (a round trip to a
// brick per file for tar as root, which chowns everything) and by asking
// for security.capability before every write(2). With HANDLE_KILLPRIV_V2
// it asks the file system to do it instead: SETATTR carries
// FATTR_KILL_SUIDGID (truncate, chown) and WRITE carries
// WRITE_KILL_SUIDGID, and the kernel marks the superblock SB_NOSEC, so a
// file's writes stop asking once one found no capability. The bricks
// write and chown as root, so their own kernel clears nothing on a write
// or truncate: the mount turns the flags into brickpb.SetattrKillSUIDGID,
// which a brick applies to the file's mode as it stands. Negotiated only
// with the writeback cache (a volume this host alone writes), where the
// node's attributes say without a round trip whether there is anything to
// clear.

// killPrivFS passes a WRITE flagged WRITE_KILL_SUIDGID to the node as a
// SETATTR with FATTR_KILL_SUIDGID alone, before the write, as the kernel
// clears the bits before writing: the fs API's Write has no flags.
type killPrivFS struct {
	gofuse.RawFileSystem
}

func (k killPrivFS) Write(cancel <-chan struct{}, in *gofuse.WriteIn, data []byte) (uint32, gofuse.Status) {
	if st := k.kill(cancel, in); st != gofuse.OK {
		return 0, st
	}
	return k.RawFileSystem.Write(cancel, in, data)
}

func (k killPrivFS) Writev(cancel <-chan struct{}, in *gofuse.WriteIn, data [][]byte) (uint32, gofuse.Status) {
	if st := k.kill(cancel, in); st != gofuse.OK {
		return 0, st
	}
	return k.RawFileSystem.Writev(cancel, in, data)
}

func (k killPrivFS) kill(cancel <-chan struct{}, in *gofuse.WriteIn) gofuse.Status {
	if in.WriteFlags&gofuse.WRITE_KILL_SUIDGID == 0 {
		return gofuse.OK
	}
	sa := gofuse.SetAttrIn{SetAttrInCommon: gofuse.SetAttrInCommon{
		InHeader: in.InHeader, Valid: gofuse.FATTR_KILL_SUIDGID}}
	var out gofuse.AttrOut
	return k.RawFileSystem.SetAttr(cancel, &sa, &out)
}
