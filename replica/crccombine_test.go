package replica

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// crc32cCombine agrees with CRC-32C over the concatenation, for empty
// parts, short ones and long ones, split anywhere.
func TestCRC32CCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 3<<20)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	cases := [][2]int{{0, 0}, {0, 1}, {1, 0}, {13, 1 << 20}, {5, 4096}, {1 << 20, 1}, {7, 3<<20 - 7}}
	for range 200 {
		a := rng.IntN(100)
		cases = append(cases, [2]int{a, rng.IntN(len(buf) - a)})
	}
	for _, c := range cases {
		a, b := buf[:c[0]], buf[c[0]:c[0]+c[1]]
		want := crc32.Checksum(buf[:c[0]+c[1]], walCRC)
		got := crc32cCombine(crc32.Checksum(a, walCRC), crc32.Checksum(b, walCRC), int64(len(b)))
		if got != want {
			t.Fatalf("combine of %d and %d bytes: %08x, want %08x", len(a), len(b), got, want)
		}
	}
}

func BenchmarkCRC32CCombine(b *testing.B) {
	for i := 0; b.Loop(); i++ {
		crc32cCombine(uint32(i), 7, 1<<20+int64(i&4095))
	}
}
