package noise

// mt19937 is the 32-bit Mersenne Twister with the standard parameters,
// seeded the way torch seeds it (init_genrand on the low 32 bits of the
// seed). Its output sequence is that of std::mt19937.
type mt19937 struct {
	state [mtN]uint32
	next  int // index of the next state word to temper
}

const (
	mtN       = 624
	mtM       = 397
	mtMatrixA = 0x9908b0df
	mtUpper   = 0x80000000
	mtLower   = 0x7fffffff
)

// seed resets the engine. torch keeps the full 64-bit seed for
// initial_seed() but only its low 32 bits reach the state, so seeds that
// differ by a multiple of 2^32 draw the same numbers.
func (m *mt19937) seed(s uint64) {
	m.state[0] = uint32(s)
	for i := 1; i < mtN; i++ {
		prev := m.state[i-1]
		m.state[i] = 1812433253*(prev^(prev>>30)) + uint32(i)
	}
	// Regenerate the whole block before the first draw.
	m.next = mtN
}

// twist regenerates all mtN state words at once.
func (m *mt19937) twist() {
	s := &m.state
	for i := 0; i < mtN; i++ {
		y := s[i]&mtUpper | s[(i+1)%mtN]&mtLower
		v := s[(i+mtM)%mtN] ^ y>>1
		if y&1 != 0 {
			v ^= mtMatrixA
		}
		s[i] = v
	}
	m.next = 0
}

// uint32 returns the next tempered output.
func (m *mt19937) uint32() uint32 {
	if m.next >= mtN {
		m.twist()
	}
	y := m.state[m.next]
	m.next++
	y ^= y >> 11
	y ^= y << 7 & 0x9d2c5680
	y ^= y << 15 & 0xefc60000
	y ^= y >> 18
	return y
}
