package head

import (
	"sync"
	"time"
)

// Clock is the head's only source of time.
type Clock interface {
	Now() time.Time
	// NewTicker delivers ticks about every d until stopped.
	NewTicker(d time.Duration) Ticker
}

// Ticker is a stoppable source of ticks.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// SystemClock is the real clock.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTicker(d time.Duration) Ticker { return sysTicker{time.NewTicker(d)} }

type sysTicker struct{ t *time.Ticker }

func (t sysTicker) C() <-chan time.Time { return t.t.C }
func (t sysTicker) Stop()               { t.t.Stop() }

// ManualClock is a Clock that moves only when told: the in-memory twin of
// SystemClock for tests. Its tickers ignore their period: every Advance
// delivers one tick to every live ticker and returns once each was received,
// so a head has taken the tick before Advance returns. Safe for concurrent use.
type ManualClock struct {
	mu      sync.Mutex
	now     time.Time
	tickers map[*manualTicker]struct{}
}

// NewManualClock starts at start.
func NewManualClock(start time.Time) *ManualClock {
	return &ManualClock{now: start, tickers: map[*manualTicker]struct{}{}}
}

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d and ticks every ticker.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	ts := make([]*manualTicker, 0, len(c.tickers))
	for t := range c.tickers {
		ts = append(ts, t)
	}
	c.mu.Unlock()
	for _, t := range ts {
		select {
		case t.c <- now:
		case <-t.stop:
		}
	}
}

// NewTicker returns a ticker driven by Advance.
func (c *ManualClock) NewTicker(time.Duration) Ticker {
	t := &manualTicker{c: make(chan time.Time), stop: make(chan struct{}), clock: c}
	c.mu.Lock()
	c.tickers[t] = struct{}{}
	c.mu.Unlock()
	return t
}

type manualTicker struct {
	c     chan time.Time
	stop  chan struct{}
	once  sync.Once
	clock *ManualClock
}

func (t *manualTicker) C() <-chan time.Time { return t.c }

func (t *manualTicker) Stop() {
	t.once.Do(func() {
		close(t.stop)
		t.clock.mu.Lock()
		delete(t.clock.tickers, t)
		t.clock.mu.Unlock()
	})
}
