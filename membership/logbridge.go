package membership

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Messages of memberlist v0.5.4 the bridge recognises. They are pinned by
// tests (logbridge_test.go and TestWrongKeyCannotJoin), so a memberlist
// upgrade that rewords them fails loudly instead of silently.
const (
	// A packet or stream from a sender with another key (or none).
	mlNoKey       = "no installed keys could decrypt the message"
	mlNotEncrypt  = "encryption is configured but remote state is not encrypted"
	mlNoConfigKey = "remote state is encrypted and encryption is not configured"
	// Our own probe of a member failed: memberlist marks it suspect.
	mlSuspectPrefix = "Suspect "
	mlSuspectSuffix = " has failed, no acks received"
	// A member's name claimed from another address (see reclaim.go).
	mlConflictPrefix = "Conflicting address for "
)

// MsgGossipRefused is the message of the record logged when a gossip packet
// or stream is refused because its sender does not have the cluster key.
const MsgGossipRefused = "gossip refused: sender does not have this cluster's key"

// refusedEvery is how often a refusal from one sender is logged.
const refusedEvery = 10 * time.Second

// maxRefusalSenders bounds the rate limiter's memory.
const maxRefusalSenders = 1024

// logBridge is the io.Writer behind memberlist's *log.Logger. Each Write is
// one "[LEVEL] memberlist: message from=addr" line (log.Logger writes each
// record in one call), which it turns into a slog record at that level.
// It also recognises key refusals (rate-limited, one clear WARN per sender
// per refusedEvery) and memberlist's own suspicion of a member (onSuspect).
type logBridge struct {
	log       *slog.Logger
	now       func() time.Time
	onSuspect func(name string)
	// quiet demotes every line to DEBUG: set by Shutdown, after which
	// memberlist's goroutines report errors from closed sockets.
	quiet atomic.Bool

	mu      sync.Mutex
	refused map[string]*refusal // by sender IP
}

type refusal struct {
	last       time.Time
	suppressed int
}

func newLogBridge(log *slog.Logger, now func() time.Time, onSuspect func(string)) *logBridge {
	return &logBridge{log: log, now: now, onSuspect: onSuspect, refused: make(map[string]*refusal)}
}

// Write never fails and never blocks on anything but the slog handler.
func (b *logBridge) Write(p []byte) (int, error) {
	b.handle(string(p))
	return len(p), nil
}

func (b *logBridge) handle(line string) {
	level, msg, from := parseMemberlistLine(line)
	if msg == "" {
		return
	}
	if from != "" && isKeyRefusal(msg) { // a refused packet or stream from someone
		b.refusal(msg, from)
		return
	}
	if b.quiet.Load() || strings.HasPrefix(msg, mlConflictPrefix) {
		level = slog.LevelDebug // conflicts: Membership logs a clearer WARN
	}
	ctx := context.Background()
	if b.log.Enabled(ctx, level) {
		attrs := []slog.Attr{slog.String("lib", "memberlist")}
		if from != "" {
			attrs = append(attrs, slog.String("from", from))
		}
		b.log.LogAttrs(ctx, level, msg, attrs...)
	}
	if name, ok := suspectName(msg); ok && b.onSuspect != nil {
		b.onSuspect(name)
	}
}

func (b *logBridge) refusal(detail, from string) {
	sender := from
	if host, _, err := net.SplitHostPort(from); err == nil {
		sender = host // streams come from ephemeral ports; limit per host
	}
	now := b.now()
	b.mu.Lock()
	r, ok := b.refused[sender]
	if ok && now.Sub(r.last) < refusedEvery {
		r.suppressed++
		b.mu.Unlock()
		return
	}
	if !ok {
		if len(b.refused) >= maxRefusalSenders {
			for k, old := range b.refused {
				if now.Sub(old.last) >= refusedEvery {
					delete(b.refused, k)
				}
			}
		}
		r = &refusal{}
		b.refused[sender] = r
	}
	suppressed := r.suppressed
	r.last, r.suppressed = now, 0
	b.mu.Unlock()

	attrs := []slog.Attr{slog.String("from", from), slog.String("detail", detail)}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	b.log.LogAttrs(context.Background(), slog.LevelWarn, MsgGossipRefused, attrs...)
}

// parseMemberlistLine splits "[LEVEL] memberlist: message from=addr".
// Lines without a level are logged at INFO (or ERROR for "Err: ...").
func parseMemberlistLine(line string) (level slog.Level, msg, from string) {
	line = strings.TrimRight(line, "\r\n")
	level = slog.LevelInfo
	if strings.HasPrefix(line, "[") {
		if end := strings.IndexByte(line, ']'); end > 0 {
			level = parseLevel(line[1:end])
			line = strings.TrimLeft(line[end+1:], " ")
		}
	} else if strings.HasPrefix(line, "Err: ") {
		level = slog.LevelError
		line = strings.TrimPrefix(line, "Err: ")
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	if i := strings.LastIndex(line, "from="); i >= 0 && !strings.ContainsAny(line[i:], " \t") {
		from = line[i+len("from="):]
		line = strings.TrimRight(line[:i], " ")
	}
	// Flatten multi-line errors (go-multierror) into one line.
	if strings.ContainsAny(line, "\n\t") {
		line = strings.Join(strings.Fields(line), " ")
	}
	return level, line, from
}

func parseLevel(s string) slog.Level {
	switch strings.ToUpper(s) {
	case "TRACE", "DEBUG":
		return slog.LevelDebug
	case "INFO":
		return slog.LevelInfo
	case "WARN", "WARNING":
		return slog.LevelWarn
	case "ERR", "ERROR":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func isKeyRefusal(msg string) bool {
	return strings.Contains(msg, mlNoKey) ||
		strings.Contains(msg, mlNotEncrypt) ||
		strings.Contains(msg, mlNoConfigKey)
}

func suspectName(msg string) (string, bool) {
	if !strings.HasPrefix(msg, mlSuspectPrefix) || !strings.HasSuffix(msg, mlSuspectSuffix) {
		return "", false
	}
	name := msg[len(mlSuspectPrefix) : len(msg)-len(mlSuspectSuffix)]
	return name, name != ""
}
