package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// busyTimeoutMS is how long a connection waits for a SQLite lock held by
// another connection (a reader running a checkpoint, a sqlite3 shell)
// before failing with SQLITE_BUSY.
const busyTimeoutMS = 5000

// maxReaders bounds the read-only connections (LoadBlocks, Audit).
const maxReaders = 4

// DB is the embedded store: one SQLite file in WAL mode. Safe for concurrent use.
//
// Writes go through a single connection, so they are serialized and each
// call is one transaction; reads use a small pool of read-only connections
// and see only committed transactions (WAL snapshots), never part of a batch.
type DB struct {
	path    string
	lock    *fileLock
	w       *sql.DB // the one writer connection
	r       *sql.DB // read-only connections
	created bool

	putStmt   *sql.Stmt // on w
	delStmt   *sql.Stmt // on w
	loadStmt  *sql.Stmt // on r
	auditStmt *sql.Stmt // on r

	closed    atomic.Bool
	lastWrite atomic.Pointer[WriteResult] // the outcome of the last write transaction
	closeOnce sync.Once
	closeErr  error
}

// Open opens or creates the store at path (parent directory must exist; create the file 0600).
// It takes an exclusive advisory lock (flock on path+".lock", non-blocking) so two postern processes
// cannot use one file; runs PRAGMA journal_mode=WAL, synchronous=FULL, foreign_keys, busy_timeout;
// checks integrity (PRAGMA quick_check) and the schema version (PRAGMA user_version, create/migrate schema v1).
//
// Open never deletes, truncates or replaces an existing file, and writes
// nothing to it before the checks pass. An existing file of zero bytes is
// taken as a new store (that is how SQLite sees it, and such a file holds no
// blocks to lose); see [DB.Created]. A file that is not a SQLite database or
// fails the check is refused with an error wrapping [ErrCorrupt]; a sound
// SQLite database that postern did not create, with [ErrNotStore]; a store
// written by a newer schema, with [ErrSchemaTooNew]; a store locked by
// another process, with [ErrLocked]. Every message names the path and says
// what to do.
func Open(ctx context.Context, path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("store: no path given")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store %s: open: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}

	lockPath := path + ".lock"
	lock, err := acquireLock(abs + ".lock")
	if errors.Is(err, errLockHeld) {
		return nil, lockedError(path, lockPath)
	}
	if err != nil {
		return nil, fsError(path, "cannot open lock file", lockPath, err)
	}
	db := &DB{path: path, lock: lock}
	if err := db.open(ctx, abs); err != nil {
		db.shut()
		return nil, err
	}
	return db, nil
}

// open does the work of Open once the lock is held.
func (db *DB) open(ctx context.Context, abs string) error {
	path := db.path
	// Create the file ourselves, so that it gets mode 0600 (SQLite gives the
	// -wal and -shm files the same mode) and so that a file we cannot write
	// fails here, with a plain message, rather than being opened read-only.
	// O_TRUNC is deliberately absent.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fsError(path, "cannot open", path, err)
	}
	fi, err := f.Stat()
	f.Close() // before SQLite opens it: closing drops POSIX locks on the file
	if err != nil {
		return fsError(path, "cannot stat", path, err)
	}
	if !fi.Mode().IsRegular() {
		return &storeError{msg: fmt.Sprintf("store %s: not a regular file (%s); the store path must name a file", path, fi.Mode().Type())}
	}

	if db.w, err = sql.Open("sqlite", dsn(abs, false)); err != nil {
		return openFailure(path, "open", err)
	}
	db.w.SetMaxOpenConns(1)
	db.w.SetMaxIdleConns(1)
	db.w.SetConnMaxLifetime(0)
	db.w.SetConnMaxIdleTime(0)

	c, err := db.w.Conn(ctx)
	if err != nil {
		return openFailure(path, "open", err)
	}
	defer c.Close()

	// Checks first: none of them writes to the file.
	if err := checkIntegrity(ctx, c, path); err != nil {
		return err
	}
	st, err := readState(ctx, c, path)
	if err != nil {
		return err
	}
	fresh, err := checkState(st, path)
	if err != nil {
		return err
	}

	// Only now may the file change: the journal mode lives in its header.
	var mode string
	if err := c.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return openFailure(path, "set WAL mode", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return &storeError{msg: fmt.Sprintf("store %s: cannot use WAL mode (journal mode stays %q); "+
			"put the store on a local file system", path, mode)}
	}
	if fresh {
		db.created = true
		if err := migrate(ctx, c, path, 0); err != nil {
			return err
		}
	} else if st.version < SchemaVersion {
		if err := migrate(ctx, c, path, st.version); err != nil {
			return err
		}
	}
	if err := checkColumns(ctx, c, path); err != nil {
		return err
	}
	// SQLite falls back to read-only when it cannot write the -wal or -shm
	// file (left behind, say, by a run as another user); find out now, not
	// at the first block.
	if _, err := c.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return openFailure(path, "check that the store is writable", err)
	}
	if _, err := c.ExecContext(ctx, "ROLLBACK"); err != nil {
		return openFailure(path, "check that the store is writable", err)
	}
	c.Close()

	if db.putStmt, err = db.w.PrepareContext(ctx, sqlPutBlock); err != nil {
		return openFailure(path, "prepare", err)
	}
	if db.delStmt, err = db.w.PrepareContext(ctx, sqlDeleteBlock); err != nil {
		return openFailure(path, "prepare", err)
	}

	if db.r, err = sql.Open("sqlite", dsn(abs, true)); err != nil {
		return openFailure(path, "open", err)
	}
	db.r.SetMaxOpenConns(maxReaders)
	db.r.SetMaxIdleConns(maxReaders)
	db.r.SetConnMaxLifetime(0)
	db.r.SetConnMaxIdleTime(0)
	if db.loadStmt, err = db.r.PrepareContext(ctx, sqlLoadBlocks); err != nil {
		return openFailure(path, "prepare", err)
	}
	if db.auditStmt, err = db.r.PrepareContext(ctx, sqlAudit); err != nil {
		return openFailure(path, "prepare", err)
	}
	return nil
}

// dsn is the driver's name for the store at abs. mode=rw: SQLite never
// creates the file (Open did). The PRAGMAs run on every new connection.
func dsn(abs string, readOnly bool) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}
	q := fmt.Sprintf("mode=rw&_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)", busyTimeoutMS)
	if readOnly {
		q += "&_query_only=1"
	}
	return u.String() + "?" + q
}

// Created reports whether Open created the store: the file did not exist or
// was empty (zero bytes), and Open wrote a new, empty schema into it.
func (db *DB) Created() bool { return db.created }

// Path returns the path the store was opened with.
func (db *DB) Path() string { return db.path }

// Close closes the store and releases its lock; a new Open of the same path
// may follow. It waits for operations in progress. The last connection to
// close checkpoints the WAL into the main file. Closing twice is harmless.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.closed.Store(true)
		db.closeErr = db.shut()
	})
	return db.closeErr
}

// shut closes whatever is open, readers before the writer (the writer, as
// the last connection, checkpoints the WAL), and the lock last.
func (db *DB) shut() error {
	var errs []error
	for _, st := range []*sql.Stmt{db.loadStmt, db.auditStmt, db.putStmt, db.delStmt} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if db.r != nil {
		errs = append(errs, db.r.Close())
	}
	if db.w != nil {
		errs = append(errs, db.w.Close())
	}
	if db.lock != nil {
		errs = append(errs, db.lock.release())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store %s: close: %w", db.path, err)
	}
	return nil
}

// check returns ErrClosed, wrapped, once Close has begun.
func (db *DB) check(op string) error {
	if db.closed.Load() {
		return fmt.Errorf("store %s: %s: %w", db.path, op, ErrClosed)
	}
	return nil
}
