package control

import (
	"errors"
	"math/big"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
)

func brick(id BrickID, free uint64) *Brick { return &Brick{ID: id, Name: string(id), FreeBytes: free} }

func TestPlace(t *testing.T) {
	const G = 1 << 30
	noDisk := &Brick{ID: "b0", FreeBytes: 1000 * G, NoDisk: true}
	for _, tc := range []struct {
		name    string
		bricks  []*Brick
		volumes []*Volume
		width   int
		want    []BrickID
	}{
		{"most free first", []*Brick{brick("b1", 10*G), brick("b2", 30*G), brick("b3", 20*G)}, nil, 2, []BrickID{"b2", "b3"}},
		{"ties by ID", []*Brick{brick("b3", G), brick("b1", G), brick("b2", G)}, nil, 3, []BrickID{"b1", "b2", "b3"}},
		{"no-disk skipped", []*Brick{noDisk, brick("b1", G), brick("b2", 2*G)}, nil, 2, []BrickID{"b2", "b1"}},
		{"nil and repeats skipped", []*Brick{nil, brick("b1", G), brick("b1", G), brick("b2", 2*G)}, nil, 2, []BrickID{"b2", "b1"}},
		{"committed quota counts", []*Brick{brick("b1", 100*G), brick("b2", 60*G), brick("b3", 50*G)},
			[]*Volume{{SizeBytes: 50 * G, Placement: []BrickID{"b1"}}, nil}, 2, []BrickID{"b2", "b1"}},
		{"over-committed last", []*Brick{brick("b1", 10*G), brick("b2", 10*G), brick("b3", 0)},
			[]*Volume{{SizeBytes: 50 * G, Placement: []BrickID{"b1", "b2"}}, {SizeBytes: 20 * G, Placement: []BrickID{"b2"}}},
			3, []BrickID{"b3", "b1", "b2"}},
		{"huge numbers", []*Brick{brick("b1", 1<<64-1), brick("b2", 0)},
			[]*Volume{{SizeBytes: 1<<63 - 1, Placement: []BrickID{"b1"}}, {SizeBytes: 1<<63 - 1, Placement: []BrickID{"b1"}}, {SizeBytes: 1<<63 - 1, Placement: []BrickID{"b1"}}},
			2, []BrickID{"b2", "b1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Place(tc.bricks, tc.volumes, tc.width)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Place = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestPlaceTooFewBricks(t *testing.T) {
	bricks := []*Brick{brick("b1", 1), brick("b2", 1), brick("b3", 1)}
	_, err := PlaceLayout(bricks, nil, Layout{Replicas: 4})
	if !errors.Is(err, ErrInvalid) || err.Error() != "replicas=4 needs 4 bricks, the cluster has 3 (alive, with a disk)" {
		t.Errorf("PlaceLayout(replicas=4) = %v", err)
	}
	bricks = append(bricks, &Brick{ID: "t", NoDisk: true})
	_, err = PlaceLayout(bricks, nil, Layout{ECData: 4, ECParity: 2})
	if !errors.Is(err, ErrInvalid) || err.Error() != "ec=4+2 needs 6 bricks, the cluster has 3 (alive, with a disk; 1 more without a disk hold no data)" {
		t.Errorf("PlaceLayout(ec=4+2) = %v", err)
	}
	_, err = Place(bricks, nil, 5)
	if !errors.Is(err, ErrInvalid) || err.Error() != "a volume of width 5 needs 5 bricks, the cluster has 3 (alive, with a disk; 1 more without a disk hold no data)" {
		t.Errorf("Place(5) = %v", err)
	}
	for _, w := range []int{0, -1} {
		if _, err := Place(bricks, nil, w); !errors.Is(err, ErrInvalid) {
			t.Errorf("Place(width %d) = %v", w, err)
		}
	}
	if _, err := PlaceLayout(bricks, nil, Layout{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("PlaceLayout(zero layout) = %v", err)
	}
}

// placeNaive is the dumb reference: exact headroom in big integers, full sort.
func placeNaive(bricks []*Brick, volumes []*Volume, width int) []BrickID {
	type c struct {
		id   BrickID
		room *big.Int
	}
	var cs []c
	seen := map[BrickID]bool{}
	for _, b := range bricks {
		if b == nil || b.NoDisk || seen[b.ID] {
			continue
		}
		seen[b.ID] = true
		room := new(big.Int).SetUint64(b.FreeBytes)
		for _, v := range volumes {
			for _, id := range v.Placement {
				if id == b.ID {
					room.Sub(room, new(big.Int).SetUint64(v.SizeBytes))
				}
			}
		}
		cs = append(cs, c{b.ID, room})
	}
	if len(cs) < width {
		return nil
	}
	sort.Slice(cs, func(i, j int) bool {
		if d := cs[i].room.Cmp(cs[j].room); d != 0 {
			return d > 0
		}
		return cs[i].id < cs[j].id
	})
	out := []BrickID{}
	for _, x := range cs[:width] {
		out = append(out, x.id)
	}
	return out
}

// Place agrees with the naive reference on random clusters, whatever the
// order bricks come in.
func TestPlaceAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(uint64(*seedFlag), 7))
	sizes := []uint64{0, 1, 1 << 30, 1 << 40, 1<<63 - 1, 1<<64 - 1}
	for range 2000 {
		var bricks []*Brick
		for _, i := range r.Perm(8)[:1+r.IntN(8)] {
			bricks = append(bricks, &Brick{ID: BrickID(rune('a' + i)), FreeBytes: sizes[r.IntN(len(sizes))] + uint64(r.IntN(3)), NoDisk: r.IntN(6) == 0})
		}
		var vols []*Volume
		for range r.IntN(6) {
			v := &Volume{SizeBytes: sizes[r.IntN(len(sizes)-1)]}
			for range 1 + r.IntN(3) {
				v.Placement = append(v.Placement, BrickID(rune('a'+r.IntN(8))))
			}
			vols = append(vols, v)
		}
		width := 1 + r.IntN(5)
		want := placeNaive(bricks, vols, width)
		got, err := Place(bricks, vols, width)
		if want == nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Place = %v, %v; reference says too few bricks", got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("Place(%v, %v, %d) = %v, %v; reference %v", bricks, vols, width, got, err, want)
		}
		r.Shuffle(len(bricks), func(i, j int) { bricks[i], bricks[j] = bricks[j], bricks[i] })
		if again, _ := Place(bricks, vols, width); !reflect.DeepEqual(again, got) {
			t.Fatalf("Place depends on brick order: %v then %v", got, again)
		}
	}
}

func TestLayoutString(t *testing.T) {
	if s := (Layout{Replicas: 3}).String(); s != "replicas=3" {
		t.Error(s)
	}
	if s := (Layout{ECData: 4, ECParity: 2}).String(); s != "ec=4+2" {
		t.Error(s)
	}
}
