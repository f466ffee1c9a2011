package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

const (
	sqlAppendAudit = `INSERT INTO audit (time, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)`
	sqlAudit       = `SELECT time, actor, action, target, detail FROM audit
	WHERE time >= ? ORDER BY time DESC, id DESC LIMIT ?`
)

// DefaultAuditLimit is how many entries Audit returns when asked for none.
const DefaultAuditLimit = 1000

// AppendAudit records administrator actions (one transaction).
//
// An entry with a zero Time is stamped with the current time. Entries are
// kept until deleted with the sqlite3 shell; the store does not prune them.
func (db *DB) AppendAudit(ctx context.Context, entries ...AuditEntry) error {
	if err := db.check("append audit"); err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	now := time.Now()
	args := make([][]any, len(entries))
	for i, e := range entries {
		t := e.Time
		if t.IsZero() {
			t = now
		}
		n, err := timeToDB(t)
		if err != nil {
			return fmt.Errorf("store %s: append audit: entry %d: %w", db.path, i, err)
		}
		args[i] = []any{n, e.Actor, e.Action, e.Target, e.Detail}
	}
	return db.write(ctx, fmt.Sprintf("append %d audit entries", len(entries)), func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, sqlAppendAudit)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, a := range args {
			if _, err := st.ExecContext(ctx, a...); err != nil {
				return err
			}
		}
		return nil
	})
}

// Audit returns audit entries at or after since, newest first, at most limit (limit<=0: 1000).
//
// A zero since returns the newest entries regardless of age. Entries with
// the same time come back in reverse order of appending. Times are in UTC.
func (db *DB) Audit(ctx context.Context, since time.Time, limit int) ([]AuditEntry, error) {
	if err := db.check("read audit"); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = DefaultAuditLimit
	}
	rows, err := db.auditStmt.QueryContext(ctx, boundToDB(since), limit)
	if err != nil {
		return nil, db.fail("read audit", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var (
			e AuditEntry
			t int64
		)
		if err := rows.Scan(&t, &e.Actor, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, db.fail(fmt.Sprintf("read audit: entry %d", len(out)+1), err)
		}
		e.Time = timeFromDB(t)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("read audit", err)
	}
	return out, nil
}
