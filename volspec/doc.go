// Package volspec is the vocabulary of volume options: names, sizes, layouts
// (replicas=N or ec=K+M), access modes, min-isr and labels, parsed and
// validated the same way at every boundary.
//
// The CLI, the daemon, the Docker volume plugin and the CSI driver all parse
// user input through this package, so a bad option gets the same clear error
// whichever door it came in by, and the control plane validates what it
// stores with the same rules. Every error names the offending field and value
// and says what would have been accepted; every error satisfies
// errors.Is(err, ErrInvalid) and errors.As(err, **Error).
//
// volspec owns only syntax and local consistency (min-isr within the layout's
// width, one layout at a time). It must never know about the cluster: whether
// there are enough bricks for a layout, whether a name is taken, how much
// space is free. Those are decided in Raft by package control. It is a leaf
// package: it imports nothing from brick, so anything may import it.
//
// # Sizes
//
// A size is a whole number of bytes ("1048576") or a number with a binary
// unit: K, M, G, T, P or E, case-insensitive, optionally followed by "i",
// "iB" or "B". Every unit is binary, whatever its spelling: "10G", "10GiB"
// and "10GB" all mean 10×2³⁰ bytes. One space may separate the number from
// its unit ("10 GiB", as FormatSize prints it). A number with a unit may have
// a decimal fraction ("1.5G"); the result is rounded up to a whole byte. Sizes
// must be positive and at most MaxSize (math.MaxInt64, so a size always fits
// an int64 such as off_t or a CSI capacity). Signs, exponents ("1e9"),
// leading or trailing spaces and unknown units are refused.
//
// # Defaults
//
// Spec.Defaults fills size DefaultSize (10 GiB), layout replicas=3, access
// single and min-isr: 2 for replicas=N≥2 (1 for replicas=1), K+1 for ec=K+M
// (one fragment of headroom above what decoding needs, as Ceph's default
// min_size). Defaults never adapt to the cluster: if the cluster has fewer
// bricks than the layout needs, creating the volume fails with a clear error.
package volspec
