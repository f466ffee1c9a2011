package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Pass is one stored travel pass (see package passes): a time-limited
// extra login list for an account or @domain.
type Pass struct {
	ID      string
	Account string
	From    string
	Created time.Time
	Until   time.Time
	By      string
	Comment string
}

// PutPass inserts or replaces a pass by its ID.
func (db *DB) PutPass(ctx context.Context, p Pass) error {
	if err := db.check("put pass"); err != nil {
		return err
	}
	if p.ID == "" || p.Account == "" || p.From == "" {
		return fmt.Errorf("store %s: put pass: %w", db.path, errors.New("pass without id, account or list"))
	}
	created, err := timeToDB(p.Created)
	if err != nil {
		return fmt.Errorf("store %s: put pass %s: created: %w", db.path, p.ID, err)
	}
	until, err := timeToDB(p.Until)
	if err != nil {
		return fmt.Errorf("store %s: put pass %s: until: %w", db.path, p.ID, err)
	}
	return db.write(ctx, "put pass "+p.ID, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO passes (id, account, from_list, created, until, by_who, comment)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, p.ID, p.Account, p.From, created, until, p.By, p.Comment)
		return err
	})
}

// DeletePasses removes the passes with the given IDs; returns how many
// existed.
func (db *DB) DeletePasses(ctx context.Context, ids []string) (int, error) {
	if err := db.check("delete passes"); err != nil {
		return 0, err
	}
	n := 0
	err := db.write(ctx, fmt.Sprintf("delete %d passes", len(ids)), func(tx *sql.Tx) error {
		n = 0
		for _, id := range ids {
			r, err := tx.ExecContext(ctx, `DELETE FROM passes WHERE id = ?`, id)
			if err != nil {
				return err
			}
			k, err := r.RowsAffected()
			if err != nil {
				return err
			}
			n += int(k)
		}
		return nil
	})
	return n, err
}

// LoadPasses returns every stored pass, expired ones included, by ID.
func (db *DB) LoadPasses(ctx context.Context) ([]Pass, error) {
	if err := db.check("load passes"); err != nil {
		return nil, err
	}
	rows, err := db.r.QueryContext(ctx, `SELECT id, account, from_list, created, until, by_who, comment FROM passes ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store %s: load passes: %w", db.path, err)
	}
	defer rows.Close()
	var out []Pass
	for rows.Next() {
		var p Pass
		var created, until int64
		if err := rows.Scan(&p.ID, &p.Account, &p.From, &created, &until, &p.By, &p.Comment); err != nil {
			return nil, fmt.Errorf("store %s: load passes: %w", db.path, err)
		}
		p.Created, p.Until = timeFromDB(created), timeFromDB(until)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store %s: load passes: %w", db.path, err)
	}
	return out, nil
}
