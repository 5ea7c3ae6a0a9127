package brickpb

// ProtocolVersion is the version of the brick.v1 services this build speaks.
// Every request carries it in its Header; a daemon refuses other versions.
const ProtocolVersion = 3

// UnlinkForget is an OP_UNLINK flag (protocol 2): Fid names the file the
// sender expects at Name, and when Name is that file's last name the brick
// also forgets it, as an OP_FORGET right after would (the result's Attr
// then has nlink 0). The file system sets it when no handle is open on the
// file, sparing a second replicated op per deleted file.
const UnlinkForget = 1

// SetattrKillSUIDGID is an OP_SETATTR flag (protocol 3): the brick clears
// the set-user-ID bit, and the set-group-ID bit when the group may execute,
// from the file's mode as it stands once the op's size and owners are set,
// as the kernel does for a write, truncate or chown by a caller without
// CAP_FSETID. The file system sets it where the kernel leaves that to it
// (FUSE_HANDLE_KILLPRIV_V2); a brick writes as root, so its own kernel
// would not.
const SetattrKillSUIDGID = 1
