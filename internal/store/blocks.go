package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/postern/postern/internal/reason"
)

const (
	sqlPutBlock = `INSERT INTO blocks
	(prefix, reason, service, detail, first_seen, last_seen, hits, expires, node, by_who, comment, level)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (prefix) DO UPDATE SET
	reason = excluded.reason, service = excluded.service, detail = excluded.detail,
	first_seen = excluded.first_seen, last_seen = excluded.last_seen, hits = excluded.hits,
	expires = excluded.expires, node = excluded.node, by_who = excluded.by_who,
	comment = excluded.comment, level = excluded.level`
	sqlDeleteBlock = `DELETE FROM blocks WHERE prefix = ?`
	sqlLoadBlocks  = `SELECT prefix, reason, service, detail, first_seen, last_seen, hits, expires,
	node, by_who, comment, level FROM blocks`
	sqlCountBlocks  = `SELECT count(*) FROM blocks`
	sqlPurgeExpired = `DELETE FROM blocks WHERE expires != 0 AND expires <= ? RETURNING prefix`
)

// Times are stored as unix nanoseconds, which span 1677-09-21 to 2262-04-11;
// 0 stands for the zero time.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// timeToDB converts t for storage: the zero time is 0, anything else its
// unix nanoseconds. Times outside the representable span, and the instant
// 1970-01-01T00:00:00Z itself (it would read back as the zero time), are
// refused.
func timeToDB(t time.Time) (int64, error) {
	if t.IsZero() {
		return 0, nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return 0, fmt.Errorf("time %s out of range (%d to %d)", t.Format(time.RFC3339), minTime.Year(), maxTime.Year())
	}
	n := t.UnixNano()
	if n == 0 {
		return 0, fmt.Errorf("time %s cannot be stored: 0 stands for the zero time", t.UTC().Format(time.RFC3339))
	}
	return n, nil
}

// timeFromDB is the inverse of timeToDB; times come back in UTC.
func timeFromDB(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// boundToDB converts a query bound, clamping it into the stored span (the
// zero time is the earliest).
func boundToDB(t time.Time) int64 {
	switch {
	case t.IsZero() || t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// prefixKey is the stored form of p: canonical, host bits cleared.
func prefixKey(p netip.Prefix) (string, error) {
	if !p.IsValid() {
		return "", fmt.Errorf("invalid prefix %v", p)
	}
	return p.Masked().String(), nil
}

// parsePrefixKey parses a stored prefix and insists on the canonical form,
// the only form PutBlocks writes.
func parsePrefixKey(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if c := p.Masked().String(); c != s {
		return netip.Prefix{}, fmt.Errorf("prefix %q is not in canonical form (%s)", s, c)
	}
	return p, nil
}

// blockArgs is b as statement arguments, validated.
func blockArgs(b *Block) ([]any, error) {
	key, err := prefixKey(b.Prefix)
	if err != nil {
		return nil, err
	}
	if !b.Reason.Valid() {
		return nil, fmt.Errorf("%s: unknown reason %s", key, b.Reason.Name())
	}
	var ts [3]int64
	for i, t := range []time.Time{b.FirstSeen, b.LastSeen, b.Expires} {
		if ts[i], err = timeToDB(t); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", key, [...]string{"first seen", "last seen", "expires"}[i], err)
		}
	}
	return []any{key, b.Reason.String(), b.Service, b.Detail, ts[0], ts[1], b.Hits, ts[2],
		b.Node, b.By, b.Comment, int64(b.Level)}, nil
}

// CheckBlock reports whether PutBlocks can store b: a valid prefix, a known
// reason and times within 1678–2262 (and not exactly the Unix epoch).
func CheckBlock(b *Block) error {
	if _, err := prefixKey(b.Prefix); err != nil {
		return err
	}
	if !b.Reason.Valid() {
		return fmt.Errorf("%s: unknown reason %s", b.Prefix, b.Reason.Name())
	}
	for i, t := range [...]time.Time{b.FirstSeen, b.LastSeen, b.Expires} {
		if _, err := timeToDB(t); err != nil {
			return fmt.Errorf("%s: %s: %w", b.Prefix, [...]string{"first seen", "last seen", "expires"}[i], err)
		}
	}
	return nil
}

// PutBlocks inserts or replaces blocks by prefix (the prefix is the key), all in ONE transaction:
// the engine batches concurrent blocks into one call (group commit). Returns only after commit.
//
// The key is the prefix with its host bits cleared (Prefix.Masked), which is
// also how it reads back. A block with an invalid prefix, an unknown reason
// or a time outside 1678–2262 (or exactly the Unix epoch) fails the whole
// call before anything is written. When a prefix appears twice, the later
// block wins. On a nil return the batch is committed and synced to disk
// (synchronous=FULL); on an error it is, except in the rare case of an I/O
// error during the commit itself, not stored.
func (db *DB) PutBlocks(ctx context.Context, blocks []Block) error {
	if err := db.check("put blocks"); err != nil {
		return err
	}
	if len(blocks) == 0 {
		return nil
	}
	// Check everything first; build each row's arguments only as it is
	// written, so a large batch holds one row's, not all of them.
	for i := range blocks {
		if _, err := blockArgs(&blocks[i]); err != nil {
			return fmt.Errorf("store %s: put blocks: block %d: %w", db.path, i, err)
		}
	}
	op := fmt.Sprintf("put %d blocks", len(blocks))
	return db.write(ctx, op, func(tx *sql.Tx) error {
		st := tx.StmtContext(ctx, db.putStmt)
		defer st.Close()
		for i := range blocks {
			a, err := blockArgs(&blocks[i])
			if err != nil {
				return err
			}
			if _, err := st.ExecContext(ctx, a...); err != nil {
				return fmt.Errorf("%s: %w", a[0], err)
			}
		}
		return nil
	})
}

// DeleteBlocks removes the given prefixes; returns how many existed.
//
// Prefixes are matched by their masked form, as PutBlocks stores them; a
// prefix given twice counts once. All deletions are one transaction.
func (db *DB) DeleteBlocks(ctx context.Context, prefixes []netip.Prefix) (int, error) {
	if err := db.check("delete blocks"); err != nil {
		return 0, err
	}
	if len(prefixes) == 0 {
		return 0, nil
	}
	keys := make([]string, len(prefixes))
	for i, p := range prefixes {
		k, err := prefixKey(p)
		if err != nil {
			return 0, fmt.Errorf("store %s: delete blocks: prefix %d: %w", db.path, i, err)
		}
		keys[i] = k
	}
	var n int64
	err := db.write(ctx, fmt.Sprintf("delete %d blocks", len(keys)), func(tx *sql.Tx) error {
		st := tx.StmtContext(ctx, db.delStmt)
		defer st.Close()
		for _, k := range keys {
			res, err := st.ExecContext(ctx, k)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			c, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += c
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// DeleteAllBlocks removes every block; returns how many.
func (db *DB) DeleteAllBlocks(ctx context.Context) (int, error) {
	if err := db.check("delete all blocks"); err != nil {
		return 0, err
	}
	var n int64
	err := db.write(ctx, "delete all blocks", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM blocks")
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// PurgeExpired deletes blocks whose Expires is non-zero and <= before, returning their prefixes.
//
// The prefixes come back in prefix order; nil when nothing expired.
func (db *DB) PurgeExpired(ctx context.Context, before time.Time) ([]netip.Prefix, error) {
	if err := db.check("purge expired blocks"); err != nil {
		return nil, err
	}
	var out []netip.Prefix
	err := db.write(ctx, "purge expired blocks", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, sqlPurgeExpired, boundToDB(before))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				return err
			}
			p, err := parsePrefixKey(s)
			if err != nil {
				return fmt.Errorf("block row %q: bad prefix: %w", s, err)
			}
			out = append(out, p)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, netip.Prefix.Compare)
	return out, nil
}

// LoadBlocks returns every stored block (expired included), in prefix order.
//
// Prefix order is netip.Prefix.Compare: IPv4 before IPv6, then by address,
// then shorter prefixes first. Times are in UTC. A row that does not parse
// fails the whole load with an error naming the store and the row; nothing
// is skipped.
func (db *DB) LoadBlocks(ctx context.Context) ([]Block, error) {
	if err := db.check("load blocks"); err != nil {
		return nil, err
	}
	// One read transaction, so that the count sizes the slice for exactly
	// the rows the query returns.
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, db.fail("load blocks", err)
	}
	defer tx.Rollback()
	var count int
	if err := tx.QueryRowContext(ctx, sqlCountBlocks).Scan(&count); err != nil {
		return nil, db.fail("load blocks", err)
	}
	rows, err := tx.StmtContext(ctx, db.loadStmt).QueryContext(ctx)
	if err != nil {
		return nil, db.fail("load blocks", err)
	}
	defer rows.Close()
	out := make([]Block, 0, count)
	// Scan's destinations escape; declared once, they are allocated once.
	var (
		prefix, code       string
		b                  Block
		first, last, until int64
		level              int64
	)
	for n := 1; rows.Next(); n++ {
		prefix, code, b = "", "", Block{}
		if err := rows.Scan(&prefix, &code, &b.Service, &b.Detail, &first, &last, &b.Hits, &until,
			&b.Node, &b.By, &b.Comment, &level); err != nil {
			return nil, db.fail(fmt.Sprintf("load blocks: row %d (prefix %q)", n, prefix), err)
		}
		if b.Prefix, err = parsePrefixKey(prefix); err != nil {
			return nil, db.badRow(prefix, "bad prefix", err)
		}
		if len(code) != 1 || !reason.Code(code[0]).Valid() {
			return nil, db.badRow(prefix, "bad reason", fmt.Errorf("%q is not a reason code", code))
		}
		if int64(int(level)) != level {
			return nil, db.badRow(prefix, "bad level", fmt.Errorf("%d out of range", level))
		}
		b.Reason = reason.Code(code[0])
		b.FirstSeen, b.LastSeen, b.Expires = timeFromDB(first), timeFromDB(last), timeFromDB(until)
		b.Level = int(level)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("load blocks", err)
	}
	slices.SortFunc(out, func(a, b Block) int { return a.Prefix.Compare(b.Prefix) })
	return out, nil
}

// badRow reports a stored block that does not parse.
func (db *DB) badRow(prefix, what string, err error) error {
	return fmt.Errorf("store %s: load blocks: block row %q: %s: %w (the row was not written by postern; "+
		"fix or delete it with the sqlite3 shell while postern is stopped)", db.path, prefix, what, err)
}

// write runs fn in one transaction on the writer connection and commits.
func (db *DB) write(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	return db.noteWrite(op, db.writeTx(ctx, op, fn))
}

func (db *DB) writeTx(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return db.fail(op, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return db.fail(op, err)
	}
	if err := tx.Commit(); err != nil {
		return db.fail(op+": commit", err)
	}
	return nil
}
