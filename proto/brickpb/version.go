package brickpb

// ProtocolVersion is the version of the brick.v1 services this build speaks.
// Every request carries it in its Header; a daemon refuses other versions.
const ProtocolVersion = 2

// UnlinkForget is an OP_UNLINK flag (protocol 2): Fid names the file the
// sender expects at Name, and when Name is that file's last name the brick
// also forgets it, as an OP_FORGET right after would (the result's Attr
// then has nlink 0). The file system sets it when no handle is open on the
// file, sparing a second replicated op per deleted file.
const UnlinkForget = 1
