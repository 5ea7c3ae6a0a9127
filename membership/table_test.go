package membership

import (
	"testing"
	"time"
)

func TestTableTransitions(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tb := newTable("self", time.Hour)
	a := observation{Name: "a", Addr: "127.0.0.1:7401", Meta: Meta{BrickID: "b-a"}}

	type step struct {
		name   string
		do     func() (Event, bool)
		want   bool
		prev   State
		state  State
		since  time.Time
		member string
	}
	steps := []step{
		{name: "new member", do: func() (Event, bool) { return tb.alive(a, at(0)) }, want: true, prev: StateUnknown, state: StateAlive, since: at(0)},
		{name: "same alive again is silent", do: func() (Event, bool) { return tb.alive(a, at(1)) }, want: false},
		{name: "ack of an alive member is silent", do: func() (Event, bool) { return tb.acked("a", at(1)) }, want: false},
		{name: "probe failed", do: func() (Event, bool) { return tb.suspect("a", at(2)) }, want: true, prev: StateAlive, state: StateSuspect, since: at(2)},
		{name: "second failed probe is silent", do: func() (Event, bool) { return tb.suspect("a", at(3)) }, want: false},
		{name: "probe acked clears suspicion", do: func() (Event, bool) { return tb.acked("a", at(4)) }, want: true, prev: StateSuspect, state: StateAlive, since: at(4)},
		{name: "suspect again", do: func() (Event, bool) { return tb.suspect("a", at(5)) }, want: true, prev: StateAlive, state: StateSuspect, since: at(5)},
		{name: "declared dead", do: func() (Event, bool) { return tb.gone(a, at(8)) }, want: true, prev: StateSuspect, state: StateDead, since: at(8)},
		{name: "a late failed probe cannot resurrect to suspect", do: func() (Event, bool) { return tb.suspect("a", at(9)) }, want: false},
		{name: "a late ack cannot resurrect", do: func() (Event, bool) { return tb.acked("a", at(9)) }, want: false},
		{name: "restart with new address", do: func() (Event, bool) {
			a.Addr, a.Meta.Free = "127.0.0.1:7500", 7
			return tb.alive(a, at(10))
		}, want: true, prev: StateDead, state: StateAlive, since: at(10)},
		{name: "meta update keeps Since", do: func() (Event, bool) {
			a.Meta.Free = 8
			return tb.alive(a, at(11))
		}, want: true, prev: StateAlive, state: StateAlive, since: at(10)},
		{name: "leave announced then gone is left", do: func() (Event, bool) {
			a.Leaving = true
			return tb.gone(a, at(12))
		}, want: true, prev: StateAlive, state: StateLeft, since: at(12)},
		{name: "self is never suspected", do: func() (Event, bool) {
			tb.alive(observation{Name: "self"}, at(0))
			return tb.suspect("self", at(12))
		}, want: false},
		{name: "first seen dead", do: func() (Event, bool) { return tb.gone(observation{Name: "z"}, at(13)) }, want: true, prev: StateUnknown, state: StateDead, since: at(13), member: "z"},
	}
	for _, s := range steps {
		ev, ok := s.do()
		if ok != s.want {
			t.Fatalf("%s: event=%v, want %v (%+v)", s.name, ok, s.want, ev)
		}
		if !ok {
			continue
		}
		want := "a"
		if s.member != "" {
			want = s.member
		}
		if ev.Member.Name != want || ev.Prev != s.prev || ev.Member.State != s.state || !ev.Member.Since.Equal(s.since) {
			t.Fatalf("%s: got %s %s→%s since %s, want %s %s→%s since %s", s.name,
				ev.Member.Name, ev.Prev, ev.Member.State, ev.Member.Since.Format(time.TimeOnly),
				want, s.prev, s.state, s.since.Format(time.TimeOnly))
		}
	}
	if m, _ := tb.get("a", at(12)); m.Addr != "127.0.0.1:7500" || m.Meta.Free != 8 {
		t.Fatalf("a = %+v, want the restarted address and latest meta", m)
	}
}

func TestTableRetention(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	tb := newTable("self", time.Minute)
	tb.alive(observation{Name: "self"}, t0)
	tb.alive(observation{Name: "b"}, t0)
	tb.alive(observation{Name: "a"}, t0)
	tb.gone(observation{Name: "a"}, t0)
	tb.gone(observation{Name: "self", Leaving: true}, t0)

	names := func(ms []Member) (out []string) {
		for _, m := range ms {
			out = append(out, m.Name+"="+m.State.String())
		}
		return out
	}
	if got := names(tb.list(t0.Add(time.Minute))); len(got) != 3 || got[0] != "a=dead" || got[1] != "b=alive" || got[2] != "self=left" {
		t.Fatalf("within retention: %v", got)
	}
	later := t0.Add(time.Minute + time.Second)
	if _, ok := tb.get("a", later); ok {
		t.Fatal("a is still listed after DeadRetention")
	}
	tb.prune(later)
	if got := names(tb.list(later)); len(got) != 2 || got[0] != "b=alive" || got[1] != "self=left" {
		t.Fatalf("after retention: %v (self must never be pruned)", got)
	}
	if _, ok := tb.members["a"]; ok {
		t.Fatal("prune kept a")
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{StateUnknown: "unknown", StateAlive: "alive", StateSuspect: "suspect", StateDead: "dead", StateLeft: "left", State(9): "State(9)"} {
		if s.String() != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), s.String(), want)
		}
	}
}
