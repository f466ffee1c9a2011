package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
)

// SchemaVersion is the schema this build writes, kept in PRAGMA user_version.
// Open migrates older stores up to it and refuses newer ones.
const SchemaVersion = 2

// applicationID marks a SQLite file as a postern store (PRAGMA
// application_id; "PSTN").
const applicationID = 0x5053544E

// migrations[v] takes a store from schema v to v+1. Each runs in one
// transaction together with the user_version update.
var migrations = []string{
	0: `
CREATE TABLE blocks (
	prefix     TEXT PRIMARY KEY NOT NULL, -- canonical: netip.Prefix.Masked().String()
	reason     TEXT NOT NULL,             -- one code letter
	service    TEXT NOT NULL DEFAULT '',
	detail     TEXT NOT NULL DEFAULT '',
	first_seen INTEGER NOT NULL DEFAULT 0, -- unix nanoseconds UTC, 0 = unset
	last_seen  INTEGER NOT NULL DEFAULT 0,
	hits       INTEGER NOT NULL DEFAULT 0,
	expires    INTEGER NOT NULL DEFAULT 0, -- 0 = never
	node       TEXT NOT NULL DEFAULT '',
	by_who     TEXT NOT NULL DEFAULT '',
	comment    TEXT NOT NULL DEFAULT '',
	level      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX blocks_expires ON blocks(expires) WHERE expires != 0;
CREATE TABLE audit (
	id     INTEGER PRIMARY KEY,
	time   INTEGER NOT NULL, -- unix nanoseconds UTC
	actor  TEXT NOT NULL,
	action TEXT NOT NULL,
	target TEXT NOT NULL,
	detail TEXT NOT NULL
);
CREATE INDEX audit_time ON audit(time);
`,
	1: `
CREATE TABLE passes (
	id         TEXT PRIMARY KEY NOT NULL,
	account    TEXT NOT NULL,             -- alice@example.com or @example.com
	from_list  TEXT NOT NULL,             -- login restriction syntax
	created    INTEGER NOT NULL DEFAULT 0, -- unix nanoseconds UTC
	until      INTEGER NOT NULL,
	by_who     TEXT NOT NULL DEFAULT '',
	comment    TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
`,
}

// wantColumns is the shape of every table at SchemaVersion, checked on open.
var wantColumns = map[string][]string{
	"blocks": {"prefix", "reason", "service", "detail", "first_seen", "last_seen", "hits",
		"expires", "node", "by_who", "comment", "level"},
	"audit":  {"id", "time", "actor", "action", "target", "detail"},
	"passes": {"id", "account", "from_list", "created", "until", "by_who", "comment"},
}

// checkIntegrity runs PRAGMA quick_check. It only reads.
func checkIntegrity(ctx context.Context, c *sql.Conn, path string) error {
	rows, err := c.QueryContext(ctx, "PRAGMA quick_check(10)")
	if err != nil {
		return openFailure(path, "integrity check", err)
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return openFailure(path, "integrity check", err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return openFailure(path, "integrity check", err)
	}
	if len(msgs) == 1 && msgs[0] == "ok" {
		return nil
	}
	return corruptError(path, "integrity check: "+strings.Join(msgs, "; "), nil)
}

// storeState is what Open finds in an existing file.
type storeState struct {
	appID, version int64
	tables         []string
}

func readState(ctx context.Context, c *sql.Conn, path string) (storeState, error) {
	var st storeState
	if err := c.QueryRowContext(ctx, "PRAGMA application_id").Scan(&st.appID); err != nil {
		return st, openFailure(path, "read application id", err)
	}
	if err := c.QueryRowContext(ctx, "PRAGMA user_version").Scan(&st.version); err != nil {
		return st, openFailure(path, "read schema version", err)
	}
	rows, err := c.QueryContext(ctx,
		"SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")
	if err != nil {
		return st, openFailure(path, "read schema", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return st, openFailure(path, "read schema", err)
		}
		st.tables = append(st.tables, name)
	}
	if err := rows.Err(); err != nil {
		return st, openFailure(path, "read schema", err)
	}
	return st, nil
}

// checkState decides from st whether the file is a new, empty database
// (fresh), a postern store this build can use, or something to refuse. It
// writes nothing.
func checkState(st storeState, path string) (fresh bool, err error) {
	switch {
	case st.appID == applicationID && st.version > SchemaVersion:
		return false, &storeError{
			msg: fmt.Sprintf("store %s has schema version %d, newer than this postern supports (%d): "+
				"it was written by a newer postern; run that version, or move the file aside "+
				"(after exporting its blocks with the newer postern); postern will not downgrade it",
				path, st.version, SchemaVersion),
			kind: ErrSchemaTooNew,
		}
	case st.appID == applicationID && st.version >= 1:
		return false, nil
	case st.appID == 0 && st.version == 0 && len(st.tables) == 0:
		return true, nil
	}
	what := fmt.Sprintf("application id %#x, user_version %d", st.appID, st.version)
	if len(st.tables) > 0 {
		what += ", tables " + strings.Join(st.tables, ", ")
	}
	return false, &storeError{
		msg: fmt.Sprintf("store %s is a SQLite database but not a postern store (%s): "+
			"check the store path, or move the file aside and restart; postern will not overwrite it",
			path, what),
		kind: ErrNotStore,
	}
}

// migrate brings the store from schema version from to SchemaVersion, one
// transaction per step.
func migrate(ctx context.Context, c *sql.Conn, path string, from int64) error {
	for v := from; v < SchemaVersion; v++ {
		tx, err := c.BeginTx(ctx, nil)
		if err != nil {
			return openFailure(path, fmt.Sprintf("migrate schema to v%d", v+1), err)
		}
		stmts := migrations[v]
		if v == 0 {
			stmts += fmt.Sprintf("PRAGMA application_id = %d;\n", applicationID)
		}
		stmts += fmt.Sprintf("PRAGMA user_version = %d;\n", v+1)
		if _, err := tx.ExecContext(ctx, stmts); err != nil {
			tx.Rollback()
			return openFailure(path, fmt.Sprintf("migrate schema to v%d", v+1), err)
		}
		if err := tx.Commit(); err != nil {
			return openFailure(path, fmt.Sprintf("migrate schema to v%d", v+1), err)
		}
	}
	return nil
}

// checkColumns verifies that every table has the columns this build uses.
func checkColumns(ctx context.Context, c *sql.Conn, path string) error {
	for table, want := range wantColumns {
		rows, err := c.QueryContext(ctx, "SELECT name FROM pragma_table_info(?)", table)
		if err != nil {
			return openFailure(path, "check schema", err)
		}
		var got []string
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				rows.Close()
				return openFailure(path, "check schema", err)
			}
			got = append(got, name)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return openFailure(path, "check schema", err)
		}
		if len(got) == 0 {
			return corruptError(path, fmt.Sprintf("schema v%d but table %s is missing", SchemaVersion, table), nil)
		}
		for _, col := range want {
			if !slices.Contains(got, col) {
				return corruptError(path, fmt.Sprintf("schema v%d but table %s lacks column %s",
					SchemaVersion, table, col), nil)
			}
		}
	}
	return nil
}
