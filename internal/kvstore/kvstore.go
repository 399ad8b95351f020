// Package kvstore opens Badger (github.com/dgraph-io/badger/v4) databases
// the way Drover runs them everywhere: every write synced before it is
// acknowledged, a small memory footprint, Badger's own log lines through
// slog, and value-log garbage collection, which Badger leaves to its user.
package kvstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Options tune a database. The zero value is the small default.
type Options struct {
	// MemTableBytes is the size of one memtable (default 16 MiB; two are
	// kept). Together with the caches it bounds the database's memory.
	MemTableBytes int64
	// BlockCacheBytes and IndexCacheBytes size the read caches (defaults
	// 16 MiB and 8 MiB).
	BlockCacheBytes int64
	IndexCacheBytes int64
	// ValueLogFileBytes is the size of one value-log file (default 64 MiB).
	ValueLogFileBytes int64
}

// DefaultMemTableBytes is the size of a memtable unless Options say
// otherwise.
const DefaultMemTableBytes = 16 << 20

// Open opens (creating if needed) the database in dir with synced writes.
func Open(dir string, o Options, logger *slog.Logger) (*badger.DB, error) {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MemTableBytes, DefaultMemTableBytes)
	def(&o.BlockCacheBytes, 16<<20)
	def(&o.IndexCacheBytes, 8<<20)
	def(&o.ValueLogFileBytes, 64<<20)
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithNumVersionsToKeep(1).
		WithMemTableSize(o.MemTableBytes).
		WithNumMemtables(2).
		WithBlockCacheSize(o.BlockCacheBytes).
		WithIndexCacheSize(o.IndexCacheBytes).
		WithValueLogFileSize(o.ValueLogFileBytes).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithNumCompactors(2).
		WithCompactL0OnClose(true).
		WithMetricsEnabled(false).
		WithLoggingLevel(badger.INFO).
		WithLogger(badgerLogger{logger})
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open badger in %s: %w", dir, err)
	}
	return db, nil
}

// CollectGarbage runs value-log garbage collection on db every interval
// until ctx ends (skipping a round when paused, if not nil, says so),
// rewriting each value-log file of which at least half is
// garbage, as many as there are.
func CollectGarbage(ctx context.Context, db *badger.DB, interval time.Duration, logger *slog.Logger, paused func() bool) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if paused != nil && paused() {
			continue
		}
		for ctx.Err() == nil {
			err := db.RunValueLogGC(0.5)
			if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
				break
			}
			if err != nil {
				logger.Warn("badger value log GC failed", "err", err)
				break
			}
		}
	}
}

// badgerLogger sends Badger's printf-style lines to slog. Its info lines
// are chatty about compactions, so they go to debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) line(level slog.Level, format string, args []any) {
	b.l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
}

func (b badgerLogger) Errorf(f string, a ...any)   { b.line(slog.LevelError, f, a) }
func (b badgerLogger) Warningf(f string, a ...any) { b.line(slog.LevelWarn, f, a) }
func (b badgerLogger) Infof(f string, a ...any)    { b.line(slog.LevelDebug, f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.line(slog.LevelDebug, f, a) }
