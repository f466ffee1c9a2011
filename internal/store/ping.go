package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Ping reports whether the store is open and answers a read, within a
// second: the readiness check of a running gateway.
func (db *DB) Ping(ctx context.Context) error {
	if db.closed.Load() {
		return errors.New("store: closed")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var one int
	if err := db.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}
