package head

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/brickvol/brick/proto/brickpb"
)

// TakeoverResult is what a new head learnt by taking a volume over.
type TakeoverResult struct {
	// StartSeq is the new head's first seq minus one: the longest log of
	// the in-sync bricks, which every brick in Level now holds.
	StartSeq uint64
	// Source is the brick whose log was the longest.
	Source string
	// MaxFID is the highest file ID any fenced brick reported.
	MaxFID uint64
	// Level are the bricks fenced and levelled: the new ISR.
	Level []string
	// Adopted, when set, is the brick whose suspect tree became the
	// volume's contents because every in-sync brick that answered was
	// suspect (Transport.Adopt); it is Source.
	Adopted string
	// Failed are the in-sync bricks that could not be fenced or levelled,
	// with why: the new head must drop them from the ISR (through Raft,
	// at its epoch) before its first write; they heal later.
	Failed map[string]error
}

// opened is one in-sync brick as Takeover found it.
type opened struct {
	id  string
	s   Stream
	pos Position
	err error
}

// TakeoverTimeout bounds each brick's fencing and levelling.
const TakeoverTimeout = 5 * time.Second

// Takeover is the first thing a new head does (design.md, "Takeover"):
// fence every brick of the ISR at the new epoch (from then on each refuses
// the old head), pick the one with the longest log, and bring the others
// level with it by replaying its op log through their streams at the new
// epoch (origin epochs kept). Every op an old head had acknowledged as
// fsync'd is on every ISR brick, so the longest log holds all of them; ops
// beyond what every brick holds were never acknowledged as durable, and
// keeping them is as good as dropping them. A suspect brick (one that
// needs a full resync) is never a source, unless every in-sync brick that
// answered is suspect: then the most advanced one is adopted (see adopt).
// It fails only when no ISR brick can be fenced (or adopted), or one says
// a newer epoch exists.
func Takeover(ctx context.Context, tr Transport, epoch uint64, isr []string, log *slog.Logger) (*TakeoverResult, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := make([]opened, len(isr))
	done := make(chan int, len(isr))
	for i, id := range isr {
		go func() {
			octx, cancel := context.WithTimeout(ctx, TakeoverTimeout)
			defer cancel()
			s, pos, err := tr.Open(octx, id, epoch)
			res[i] = opened{id: id, s: s, pos: pos, err: err}
			done <- i
		}()
	}
	for range isr {
		<-done
	}
	defer func() {
		for _, o := range res {
			if o.s != nil {
				o.s.Close()
			}
		}
	}()
	out := &TakeoverResult{Failed: map[string]error{}}
	src := -1
	var suspects []int
	trusted := false
	for i := range res {
		o := &res[i]
		switch {
		case errors.Is(o.err, ErrStaleEpoch):
			// Before any adopting: a newer head decides, not this one.
			return nil, fmt.Errorf("fencing brick %s at epoch %d: %w", o.id, epoch, o.err)
		case o.err == nil && o.pos.NeedsFullHeal != "":
			// Not trustworthy beyond its synced seq: never a source, and
			// out of the ISR until a full resync.
			o.err = fmt.Errorf("needs a full resync: %s", o.pos.NeedsFullHeal)
			suspects = append(suspects, i)
		case o.err == nil:
			trusted = true
		}
	}
	if !trusted && len(suspects) > 0 {
		if i, err := adopt(ctx, tr, epoch, isr, res, suspects, log); err != nil {
			return nil, err
		} else if i >= 0 {
			res[i].err = nil
			out.Adopted = res[i].id
		}
	}
	for i, o := range res {
		if o.err != nil {
			out.Failed[o.id] = o.err
			continue
		}
		out.MaxFID = max(out.MaxFID, o.pos.MaxFID)
		if src < 0 || o.pos.Applied > res[src].pos.Applied {
			src = i
		}
	}
	if src < 0 {
		return nil, fmt.Errorf("no in-sync brick of %v could be fenced at epoch %d: %w", isr, epoch, errors.Join(mapErrs(out.Failed)...))
	}
	out.StartSeq, out.Source = res[src].pos.Applied, res[src].id
	for i, o := range res {
		if o.err != nil {
			continue
		}
		if i != src && o.pos.Applied < out.StartSeq {
			log.Info("levelling a brick from the longest log", "brick", o.id, "from", o.pos.Applied, "to", out.StartSeq, "source", out.Source)
			lctx, cancel := context.WithTimeout(ctx, 12*TakeoverTimeout)
			err := level(lctx, tr, epoch, out.Source, o.s, o.pos.Applied, out.StartSeq)
			cancel()
			if errors.Is(err, ErrStaleEpoch) {
				return nil, fmt.Errorf("levelling brick %s at epoch %d: %w", o.id, epoch, err)
			}
			if err != nil {
				log.Warn("levelling failed: the brick leaves the in-sync set and heals later", "brick", o.id, "err", err)
				out.Failed[o.id] = err
				continue
			}
		}
		out.Level = append(out.Level, o.id)
	}
	return out, nil
}

// adopt is Takeover's way out when every in-sync brick that answered is
// suspect (a power loss of all of them): it asks the most advanced one
// (highest synced seq, then applied) to take its tree as the volume's
// contents, the next one if that fails. Each holds every op an fsync was
// acknowledged for, as every in-sync brick does (design.md promise 1); what
// was never fsync'd may be missing or partly there, as on a local disk
// after a power loss. The others stay out of the ISR until a full resync
// from it. It returns the adopted brick's index in res (its pos updated),
// -1 when none could be.
func adopt(ctx context.Context, tr Transport, epoch uint64, isr []string, res []opened, suspects []int, log *slog.Logger) (int, error) {
	slices.SortStableFunc(suspects, func(a, b int) int {
		pa, pb := res[a].pos, res[b].pos
		return cmp.Or(cmp.Compare(pb.Synced, pa.Synced), cmp.Compare(pb.Applied, pa.Applied))
	})
	for _, i := range suspects {
		o := &res[i]
		why := fmt.Sprintf("every in-sync brick of %v that answered the takeover at epoch %d needs a full resync; "+
			"brick %s is the most advanced of them (synced seq %d, applied seq %d) and becomes the source: "+
			"what was fsync'd is on it, later writes may be missing or partial (it said: %s)",
			isr, epoch, o.id, o.pos.Synced, o.pos.Applied, o.pos.NeedsFullHeal)
		actx, cancel := context.WithTimeout(ctx, TakeoverTimeout)
		pos, err := tr.Adopt(actx, o.id, epoch, truncate(why, maxAdoptReason))
		cancel()
		if errors.Is(err, ErrStaleEpoch) {
			return -1, fmt.Errorf("adopting brick %s at epoch %d: %w", o.id, epoch, err)
		}
		if err != nil {
			log.Warn("could not adopt a suspect brick", "brick", o.id, "err", err)
			o.err = fmt.Errorf("%w; adopting it failed: %w", o.err, err)
			continue
		}
		if pos.NeedsFullHeal != "" {
			o.err = fmt.Errorf("%w; still suspect after adopting: %s", o.err, pos.NeedsFullHeal)
			continue
		}
		log.Warn("every in-sync brick came back suspect (an unclean shutdown of all of them): adopted the most advanced one's tree",
			"brick", o.id, "synced", pos.Synced, "applied", pos.Applied, "was", o.pos.NeedsFullHeal)
		o.pos = pos
		return i, nil
	}
	return -1, nil
}

// maxAdoptReason is what a brick takes as an adopt reason
// (replica.MaxAdoptReason).
const maxAdoptReason = 1024

// truncate cuts s to at most n bytes, at a rune boundary (protobuf strings
// must be UTF-8).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// level replays source's ops after from up to to into s (a stream at
// epoch) and waits until the brick applied them.
func level(ctx context.Context, tr Transport, epoch uint64, source string, s Stream, from, to uint64) error {
	last := from
	err := tr.OpsSince(ctx, source, epoch, from, func(op *brickpb.Op) error {
		if op.Seq > to {
			return errStopScan
		}
		op.OriginEpoch = OriginEpoch(op)
		op.Epoch = epoch // a brick takes ops at its stream's epoch only
		if err := s.Send([]*brickpb.Op{op}); err != nil {
			return fmt.Errorf("sending op %d: %w", op.Seq, err)
		}
		last = op.Seq
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return fmt.Errorf("replaying the op log of %s: %w", source, err)
	}
	if last != to {
		return fmt.Errorf("the op log of %s ended at %d, want %d", source, last, to)
	}
	for {
		ack, err := s.Recv()
		if ack != nil && ack.AppliedSeq >= to {
			return nil // applied is enough: the head's next barrier makes it durable
		}
		if err != nil {
			return fmt.Errorf("waiting for the replay to apply: %w", err)
		}
		if ack.Error != "" {
			return fmt.Errorf("the brick refused the replay: %s", ack.Error)
		}
	}
}

var errStopScan = errors.New("stop scan")

func mapErrs(m map[string]error) []error {
	var out []error
	for id, err := range m {
		out = append(out, fmt.Errorf("%s: %w", id, err))
	}
	return out
}
