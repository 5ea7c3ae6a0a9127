package control

import (
	"fmt"
	"math/bits"
	"sort"

	"github.com/brickvol/brick/volspec"
)

// String renders the layout as users write it: "replicas=3", "ec=4+2".
func (l Layout) String() string { return volspec.Layout(l).String() }

// Place chooses width distinct bricks for a new volume: bricks with a disk
// (NoDisk false), most headroom first, ties broken by brick ID so the choice
// is deterministic. Headroom is FreeBytes minus the committed quota: the
// SizeBytes of every volume in volumes already placed on the brick (it may
// be negative; over-committed bricks come last).
//
// The caller passes only the bricks it considers alive; nil entries and
// repeated IDs are skipped. The result is in order of preference (fragment
// order for erasure coding) and owned by the caller. With fewer eligible
// bricks than width the error wraps ErrInvalid and counts them.
func Place(bricks []*Brick, volumes []*Volume, width int) ([]BrickID, error) {
	return place(bricks, volumes, width, fmt.Sprintf("a volume of width %d", width))
}

// PlaceLayout is Place for a layout, with the layout in the error:
// "replicas=4 needs 4 bricks, the cluster has 3 (alive, with a disk)".
func PlaceLayout(bricks []*Brick, volumes []*Volume, l Layout) ([]BrickID, error) {
	if err := volspec.Layout(l).Validate(); err != nil {
		return nil, fmt.Errorf("place volume: %w: %w", ErrInvalid, err)
	}
	return place(bricks, volumes, l.Width(), l.String())
}

type candidate struct {
	id   BrickID
	free uint64
	// committed is a 128-bit sum (hi, lo), so no total can overflow.
	comHi, comLo uint64
}

// roomier reports whether a has more headroom than b:
// a.free - a.committed > b.free - b.committed, computed without overflow as
// a.free + b.committed > b.free + a.committed in 128 bits.
func (a candidate) roomier(b candidate) bool {
	lLo, c := bits.Add64(a.free, b.comLo, 0)
	lHi, _ := bits.Add64(b.comHi, 0, c)
	rLo, c := bits.Add64(b.free, a.comLo, 0)
	rHi, _ := bits.Add64(a.comHi, 0, c)
	if lHi != rHi {
		return lHi > rHi
	}
	return lLo > rLo
}

func place(bricks []*Brick, volumes []*Volume, width int, what string) ([]BrickID, error) {
	if width < 1 {
		return nil, fmt.Errorf("place %s: %w: width must be at least 1", what, ErrInvalid)
	}
	committed := map[BrickID][2]uint64{} // hi, lo
	for _, v := range volumes {
		if v == nil {
			continue
		}
		for _, id := range v.Placement {
			sum := committed[id]
			var carry uint64
			sum[1], carry = bits.Add64(sum[1], v.SizeBytes, 0)
			sum[0] += carry
			committed[id] = sum
		}
	}
	seen := map[BrickID]bool{}
	var cands []candidate
	noDisk := 0
	for _, b := range bricks {
		if b == nil || seen[b.ID] {
			continue
		}
		seen[b.ID] = true
		if b.NoDisk {
			noDisk++
			continue
		}
		com := committed[b.ID]
		cands = append(cands, candidate{id: b.ID, free: b.FreeBytes, comHi: com[0], comLo: com[1]})
	}
	if len(cands) < width {
		extra := ""
		if noDisk > 0 {
			extra = fmt.Sprintf("; %d more without a disk hold no data", noDisk)
		}
		return nil, &detailError{kind: ErrInvalid,
			msg: fmt.Sprintf("%s needs %d bricks, the cluster has %d (alive, with a disk%s)", what, width, len(cands), extra)}
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.roomier(b) {
			return true
		}
		if b.roomier(a) {
			return false
		}
		return a.id < b.id
	})
	out := make([]BrickID, width)
	for i := range out {
		out[i] = cands[i].id
	}
	return out, nil
}
