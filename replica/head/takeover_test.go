package head

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/brickvol/brick/proto/brickpb"
)

var (
	takeoverSeed = flag.Int64("takeover-seed", 0, "run TestTakeoverSchedules with this seed only")
	takeoverRuns = flag.Int("takeover-runs", 400, "TestTakeoverSchedules runs (without -takeover-seed)")
)

// TestTakeoverSchedules is the failover model: a volume on three in-memory
// bricks goes through a seeded random series of heads, each taking over at
// a new epoch with Takeover, writing and fsyncing, then dying at a random
// point (mid-broadcast included), while bricks crash (losing what they had
// not fsync'd, or all of them some of it and their trust: a power loss),
// drop out of the ISR, heal back, and are cut off during a
// takeover (and fence themselves at the catalog's epoch when they return,
// as brickd does). Deposed heads keep trying to write. After every
// takeover it checks:
//   - no acknowledged fsync is lost: every op an fsync covered is on every
//     brick of the new ISR, unchanged;
//   - all ISR replicas are equal (seq, origin epoch, data) up to the start;
//   - no brick holds an op of a stale epoch beyond where the new head
//     started, whatever the deposed heads sent.
//
// It is deterministic for a seed (MemNet applies and acknowledges inline),
// which is printed on failure.
func TestTakeoverSchedules(t *testing.T) {
	if *takeoverSeed != 0 {
		if err := runTakeovers(*takeoverSeed); err != nil {
			t.Fatalf("seed %d: %v", *takeoverSeed, err)
		}
		return
	}
	base := time.Now().UnixNano()
	for i := range *takeoverRuns {
		seed := base + int64(i)
		if err := runTakeovers(seed); err != nil {
			t.Fatalf("seed %d: %v\nrerun: go test ./replica/head -run TestTakeoverSchedules -takeover-seed %d -v", seed, err, seed)
		}
	}
}

type deposedHead struct {
	epoch   uint64
	streams map[string]Stream
	next    uint64
}

func runTakeovers(seed int64) error {
	rng := rand.New(rand.NewSource(seed))
	ctx := context.Background()
	ids := []string{"a", "b", "c"}
	net := NewMemNet(ids...)
	isr := slices.Clone(ids) // as committed in Raft
	acked := map[uint64][]byte{}
	var epoch uint64
	var deposed []*deposedHead
	reachable := func(id string, on bool) {
		b := net.Brick(id)
		if on {
			b.Fence(epoch) // brickd fences its replica at the catalog's epoch
		}
		b.SetReachable(on)
	}
	gens := 3 + rng.Intn(6)
	for gen := 0; gen < gens; gen++ {
		epoch++
		for _, id := range ids {
			reachable(id, rng.Intn(5) != 0)
		}
		to, err := Takeover(ctx, net, epoch, isr, nil)
		if err != nil {
			if errors.Is(err, ErrStaleEpoch) {
				return fmt.Errorf("gen %d: takeover at epoch %d: %v", gen, epoch, err)
			}
			// Nothing in the ISR answers: the volume waits for its bricks.
			epoch++
			for _, id := range ids {
				reachable(id, true)
			}
			if to, err = Takeover(ctx, net, epoch, isr, nil); err != nil {
				return fmt.Errorf("gen %d: takeover with every brick back: %v", gen, err)
			}
		}
		if err := checkTakeover(net, to, acked, epoch); err != nil {
			return fmt.Errorf("gen %d (epoch %d, isr %v): %v", gen, epoch, isr, err)
		}
		isr = to.Level
		// The deposed heads try again: nothing of theirs may land.
		for _, d := range deposed {
			for _, s := range d.streams {
				s.Send([]*brickpb.Op{writeOpAt(d.next, d.epoch)})
			}
		}
		if err := checkNoStale(net, isr, to.StartSeq, epoch); err != nil {
			return fmt.Errorf("gen %d: after the deposed heads wrote: %v", gen, err)
		}
		// The new head writes.
		streams := map[string]Stream{}
		for _, id := range isr {
			s, pos, err := net.Open(ctx, id, epoch)
			if err != nil {
				return fmt.Errorf("gen %d: opening %s after the takeover: %v", gen, id, err)
			}
			if pos.Applied != to.StartSeq {
				return fmt.Errorf("gen %d: %s is at %d after levelling, want %d", gen, id, pos.Applied, to.StartSeq)
			}
			streams[id] = s
		}
		seq := to.StartSeq
		steps := rng.Intn(40)
		for k := 0; k < steps; k++ {
			seq++
			op := writeOpAt(seq, epoch)
			if rng.Intn(6) == 0 {
				op.Type, op.Data = brickpb.OpType_OP_SYNC, nil
			}
			for _, id := range isr {
				streams[id].Send([]*brickpb.Op{proto.Clone(op).(*brickpb.Op)})
			}
			if op.Type == brickpb.OpType_OP_SYNC && allSynced(net, isr, seq) {
				// The fsync returns: everything up to it is acknowledged.
				for _, o := range net.Brick(isr[0]).Ops() {
					if o.Seq <= seq {
						acked[o.Seq] = opKey(o)
					}
				}
			}
			// The ISR shrinks now and then (a brick timed out): from then on
			// it misses ops, and only a heal brings it back.
			if len(isr) > 1 && rng.Intn(25) == 0 {
				drop := isr[rng.Intn(len(isr))]
				streams[drop].Close()
				delete(streams, drop)
				isr = slices.DeleteFunc(slices.Clone(isr), func(id string) bool { return id == drop })
			}
		}
		// The head dies, maybe half-way through a broadcast.
		if rng.Intn(2) == 0 {
			seq++
			op := writeOpAt(seq, epoch)
			for _, id := range isr {
				if rng.Intn(2) == 0 {
					streams[id].Send([]*brickpb.Op{proto.Clone(op).(*brickpb.Op)})
				}
			}
		}
		deposed = append(deposed, &deposedHead{epoch: epoch, streams: streams, next: seq + 1})
		// Bricks crash, losing what they had not fsync'd; now and then
		// the power goes everywhere: every brick comes back suspect with
		// some of what it had not fsync'd, and the next takeover must
		// adopt one.
		powerLoss := rng.Intn(6) == 0
		for _, id := range ids {
			switch {
			case powerLoss:
				net.Brick(id).PowerLoss(rng.Intn(3))
			case rng.Intn(4) == 0:
				net.Brick(id).Crash()
			}
		}
		// A brick outside the ISR is healed back now and then (what the
		// head's heal does), from a brick of the ISR.
		if len(isr) < len(ids) && rng.Intn(2) == 0 {
			for _, id := range ids {
				if !slices.Contains(isr, id) {
					src := net.Brick(isr[rng.Intn(len(isr))])
					if src.Position().Synced == src.Position().Applied {
						net.Brick(id).HealFrom(src)
						isr = append(slices.Clone(isr), id)
					}
					break
				}
			}
		}
	}
	return nil
}

func writeOpAt(seq, epoch uint64) *brickpb.Op {
	return &brickpb.Op{Type: brickpb.OpType_OP_WRITE, Seq: seq, Epoch: epoch, OriginEpoch: epoch, Fid: 2,
		Data: []byte(fmt.Sprintf("e%d-s%d", epoch, seq))}
}

func opKey(o *brickpb.Op) []byte {
	return []byte(fmt.Sprintf("%d/%d/%v/%s", o.Seq, OriginEpoch(o), o.Type, o.Data))
}

func allSynced(net *MemNet, isr []string, seq uint64) bool {
	for _, id := range isr {
		if net.Brick(id).Position().Synced < seq {
			return false
		}
	}
	return true
}

// checkTakeover: every acknowledged op is on every levelled brick, and the
// levelled bricks are equal up to the start.
func checkTakeover(net *MemNet, to *TakeoverResult, acked map[uint64][]byte, epoch uint64) error {
	if len(to.Level) == 0 {
		return errors.New("takeover levelled no brick")
	}
	var ref []*brickpb.Op
	for i, id := range to.Level {
		ops := net.Brick(id).Ops()
		if p := net.Brick(id).Position(); p.Applied != to.StartSeq {
			return fmt.Errorf("%s at %d after levelling, start is %d", id, p.Applied, to.StartSeq)
		}
		bySeq := map[uint64]*brickpb.Op{}
		for _, o := range ops {
			bySeq[o.Seq] = o
		}
		for seq, want := range acked {
			o := bySeq[seq]
			if o == nil || !bytes.Equal(opKey(o), want) {
				return fmt.Errorf("ACKNOWLEDGED FSYNC LOST: %s has %v at seq %d, the acknowledged op was %s", id, o, seq, want)
			}
		}
		if i == 0 {
			ref = ops
			continue
		}
		if len(ops) != len(ref) {
			return fmt.Errorf("ISR replicas differ: %s holds %d ops, %s %d", id, len(ops), to.Level[0], len(ref))
		}
		for j := range ops {
			if !bytes.Equal(opKey(ops[j]), opKey(ref[j])) {
				return fmt.Errorf("ISR replicas differ at seq %d: %s has %s, %s has %s", ops[j].Seq, id, opKey(ops[j]), to.Level[0], opKey(ref[j]))
			}
		}
	}
	return nil
}

// checkNoStale: beyond the new head's start, the ISR bricks hold nothing
// of an older epoch.
func checkNoStale(net *MemNet, isr []string, start, epoch uint64) error {
	for _, id := range isr {
		for _, o := range net.Brick(id).Ops() {
			if o.Seq > start && o.Epoch < epoch {
				return fmt.Errorf("brick %s accepted op %d of stale epoch %d after the takeover at epoch %d", id, o.Seq, o.Epoch, epoch)
			}
		}
	}
	return nil
}

// feed opens a stream to each brick at epoch and sends ops from..to (a
// sync at every multiple of syncEvery) to all of them.
func feed(t *testing.T, net *MemNet, ids []string, epoch, from, to, syncEvery uint64) {
	t.Helper()
	for _, id := range ids {
		s, _, err := net.Open(context.Background(), id, epoch)
		if err != nil {
			t.Fatalf("opening %s: %v", id, err)
		}
		for seq := from; seq <= to; seq++ {
			op := writeOpAt(seq, epoch)
			if syncEvery > 0 && seq%syncEvery == 0 {
				op.Type, op.Data = brickpb.OpType_OP_SYNC, nil
			}
			if err := s.Send([]*brickpb.Op{op}); err != nil {
				t.Fatalf("sending op %d to %s: %v", seq, id, err)
			}
		}
	}
}

// TestTakeoverAdoptsWhenEveryBrickIsSuspect: after a power loss of every
// in-sync brick, each comes back suspect. The takeover adopts the most
// advanced one (synced, then applied) instead of refusing the volume for
// ever, keeps the others out until a full resync, and leaves a brick
// that is not suspect as the only kind of source when one answers.
func TestTakeoverAdoptsWhenEveryBrickIsSuspect(t *testing.T) {
	ctx := context.Background()
	ids := []string{"a", "b", "c"}
	setup := func() *MemNet {
		net := NewMemNet(ids...)
		feed(t, net, ids, 1, 1, 13, 5) // synced up to 10 everywhere
		net.Brick("a").PowerLoss(0)
		net.Brick("b").PowerLoss(3)
		net.Brick("c").PowerLoss(2)
		return net
	}

	t.Run("most advanced adopted", func(t *testing.T) {
		net := setup()
		to, err := Takeover(ctx, net, 2, ids, nil)
		if err != nil {
			t.Fatalf("takeover with every brick suspect: %v", err)
		}
		if to.Adopted != "b" || to.Source != "b" || to.StartSeq != 13 || !slices.Equal(to.Level, []string{"b"}) {
			t.Fatalf("adopted %q source %q start %d level %v; want b, b, 13, [b]", to.Adopted, to.Source, to.StartSeq, to.Level)
		}
		for _, id := range []string{"a", "c"} {
			if err := to.Failed[id]; err == nil || !strings.Contains(err.Error(), "full resync") {
				t.Errorf("%s: failed with %v, want a full resync", id, err)
			}
			if net.Brick(id).Adopted() != 0 {
				t.Errorf("%s adopted too", id)
			}
		}
		p := net.Brick("b").Position()
		if p.NeedsFullHeal != "" || p.Synced != 13 || net.Brick("b").Adopted() != 1 {
			t.Errorf("b after adopting: %+v, adopted %d times", p, net.Brick("b").Adopted())
		}
		acked := map[uint64][]byte{}
		for _, o := range net.Brick("b").Ops() {
			if o.Seq <= 10 {
				acked[o.Seq] = opKey(o)
			}
		}
		if len(acked) != 10 {
			t.Fatalf("b holds %d of the 10 synced ops", len(acked))
		}
		if err := checkTakeover(net, to, acked, 2); err != nil {
			t.Error(err)
		}
	})

	t.Run("next one when the best is unreachable", func(t *testing.T) {
		net := setup()
		net.Brick("b").SetReachable(false)
		to, err := Takeover(ctx, net, 2, ids, nil)
		if err != nil {
			t.Fatal(err)
		}
		if to.Adopted != "c" || to.StartSeq != 12 {
			t.Errorf("adopted %q at %d, want c at 12", to.Adopted, to.StartSeq)
		}
	})

	t.Run("a trusted brick is the source", func(t *testing.T) {
		net := setup()
		net.Brick("a").SetSuspect("")
		to, err := Takeover(ctx, net, 2, ids, nil)
		if err != nil {
			t.Fatal(err)
		}
		if to.Adopted != "" || to.Source != "a" || !slices.Equal(to.Level, []string{"a"}) {
			t.Errorf("adopted %q source %q level %v; want none, a, [a]", to.Adopted, to.Source, to.Level)
		}
		for _, id := range ids {
			if net.Brick(id).Adopted() != 0 {
				t.Errorf("%s adopted with a trusted brick answering", id)
			}
		}
	})

	t.Run("a newer epoch stops it before adopting", func(t *testing.T) {
		net := setup()
		net.Brick("a").Fence(3)
		if _, err := Takeover(ctx, net, 2, ids, nil); !errors.Is(err, ErrStaleEpoch) {
			t.Fatalf("takeover with a brick fenced at a newer epoch: %v", err)
		}
		for _, id := range ids {
			if net.Brick(id).Adopted() != 0 || net.Brick(id).Position().NeedsFullHeal == "" {
				t.Errorf("%s adopted by a stale head", id)
			}
		}
	})

	t.Run("none reachable", func(t *testing.T) {
		net := setup()
		for _, id := range ids {
			net.Brick(id).SetReachable(false)
		}
		if _, err := Takeover(ctx, net, 2, ids, nil); err == nil {
			t.Fatal("takeover with no brick reachable succeeded")
		}
	})
}
