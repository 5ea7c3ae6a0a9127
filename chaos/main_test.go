package chaos

import (
	"encoding/hex"
	"fmt"
	"os"
	"testing"
)

// TestMain doubles as a writer process (BRICK_CHAOS_WRITER=DIR): a writer
// whose host is frozen must be a process of its own, since any fork of a
// process holding a file open on a frozen FUSE mount hangs in the child's
// close-on-exec (FUSE FLUSH waits for the frozen server).
func TestMain(m *testing.M) {
	if dir := os.Getenv("BRICK_CHAOS_WRITER"); dir != "" {
		os.Exit(writerProcess(dir))
	}
	os.Exit(m.Run())
}

// writerProcess writes files with fsync into dir, printing "ack NAME
// SHA256" after each acknowledged one, until an error.
func writerProcess(dir string) int {
	l := &ledger{files: map[string][32]byte{}}
	l.onAdd = func(name string, sum [32]byte) { fmt.Printf("ack %s %s\n", name, hex.EncodeToString(sum[:])) }
	_, n, err := writer(nil, dir, l, nil)
	fmt.Fprintf(os.Stderr, "writer stopped after %d files: %v\n", n, err)
	return 1
}
