package brickpb

// ProtocolVersion is the version of the brick.v1 services this build speaks.
// Every request carries it in its Header; a daemon refuses other versions.
const ProtocolVersion = 1
