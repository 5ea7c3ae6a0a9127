package replica

// CRC-32C of a concatenation from the CRCs of its parts (zlib's
// crc32_combine, for the Castagnoli polynomial): the op log's record
// checksum covers a payload whose tail (an op's encoding, a write's data)
// appendLogRec has just checksummed, and running CRC-32C over a big write
// twice was a tenth of a brick's CPU in a sequential write.

// castagnoliReflected is the Castagnoli polynomial, bit-reflected, x^32
// implied.
const castagnoliReflected = 0x82f63b78

// x2nCastagnoli[k] is x^(2^k) modulo the polynomial.
var x2nCastagnoli = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	for k := range t {
		t[k] = p
		p = multModP(p, p)
	}
	return t
}()

// multModP multiplies a and b modulo the polynomial (bit-reflected: the
// top bit is x^0).
func multModP(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				break
			}
		}
		if b&1 != 0 {
			b = b>>1 ^ castagnoliReflected
		} else {
			b >>= 1
		}
	}
	return p
}

// crc32cCombine returns the CRC-32C of A||B from crcA, the CRC-32C of A,
// and crcB, that of B, n bytes long.
func crc32cCombine(crcA, crcB uint32, n int64) uint32 {
	// crcA advanced over n zero bytes: times x^(8n).
	p := uint32(1) << 31 // x^0
	for k := 3; n != 0; n, k = n>>1, k+1 {
		if n&1 != 0 {
			p = multModP(x2nCastagnoli[k&31], p)
		}
	}
	return multModP(p, crcA) ^ crcB
}
