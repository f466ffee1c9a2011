package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Sentinel errors. Errors returned by this package wrap them, so callers test
// with errors.Is; the messages the administrator sees are the wrapping errors'.
var (
	// ErrLocked: another process (or another DB in this process) has the
	// store open.
	ErrLocked = errors.New("store in use")
	// ErrCorrupt: the file is not a SQLite database or fails its integrity
	// check.
	ErrCorrupt = errors.New("store corrupt")
	// ErrNotStore: the file is a sound SQLite database that postern did not
	// create.
	ErrNotStore = errors.New("not a postern store")
	// ErrSchemaTooNew: the store was written by a newer postern whose schema
	// this build does not know.
	ErrSchemaTooNew = errors.New("store schema newer than this build")
	// ErrClosed: the DB has been closed.
	ErrClosed = errors.New("store closed")
)

// storeError is an error whose message is written for the administrator and
// which wraps a sentinel (kind) and the underlying cause, either may be nil.
type storeError struct {
	msg   string
	kind  error
	cause error
}

func (e *storeError) Error() string { return e.msg }

func (e *storeError) Unwrap() []error {
	var errs []error
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// sqliteCode returns the primary SQLite result code carried by err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

// isCorruption reports whether err is SQLite saying the file is not a
// database or is damaged.
func isCorruption(err error) bool {
	switch sqliteCode(err) {
	case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT:
		return true
	}
	return false
}

func lockedError(path, lockPath string) error {
	return &storeError{
		msg: fmt.Sprintf("store %s: in use by another postern process (lock %s held); "+
			"stop it or use another store path", path, lockPath),
		kind: ErrLocked,
	}
}

func corruptError(path, what string, cause error) error {
	return &storeError{
		msg: fmt.Sprintf("store %s is corrupt (%s): move it aside (blocks in it are lost unless "+
			"you restore an export) and restart; postern will not overwrite it", path, what),
		kind:  ErrCorrupt,
		cause: cause,
	}
}

// fsError explains a failure to open or create a file of the store: the
// path, the cause, and what the administrator can do about it.
func fsError(path, what, file string, err error) error {
	var hint string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		hint = "; the directory must exist: create it or fix the store path"
	case errors.Is(err, fs.ErrPermission):
		hint = "; make the directory and the file writable by the user postern runs as"
	case errors.Is(err, syscall.EROFS):
		hint = "; the file system is read-only: put the store on a writable file system"
	case errors.Is(err, syscall.EISDIR):
		hint = "; the store path must name a file, not a directory"
	}
	cause := err
	var pe *fs.PathError
	if errors.As(err, &pe) {
		cause = pe.Err // the path is in the message already
	}
	return &storeError{
		msg:   fmt.Sprintf("store %s: %s %s: %v%s", path, what, file, cause, hint),
		cause: err,
	}
}

// openFailure turns an error SQLite returned while opening and checking the
// store into one the administrator can act on.
func openFailure(path, step string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("store %s: %s: %w", path, step, err)
	}
	var hint string
	switch sqliteCode(err) {
	case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT:
		return corruptError(path, err.Error(), err)
	case sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM:
		hint = "; postern must be able to write the file, and to create or write " + path + "-wal and " +
			path + "-shm beside it (left over, perhaps, from a run as another user): check the owner " +
			"and permissions of these files and of their directory"
	case sqlite3.SQLITE_BUSY:
		hint = "; another program (not postern) holds a lock on the file: close it"
	case sqlite3.SQLITE_FULL:
		hint = "; the disk is full: free space and restart"
	case sqlite3.SQLITE_IOERR:
		hint = "; the file system reported an I/O error: check the disk and the kernel log"
	}
	return &storeError{
		msg:   fmt.Sprintf("store %s: %s: %v%s", path, step, err, hint),
		cause: err,
	}
}

// fail wraps an error from an operation on an open store: the path, the
// operation, and ErrCorrupt too when SQLite found the file damaged.
func (db *DB) fail(op string, err error) error {
	if isCorruption(err) {
		return &storeError{
			msg: fmt.Sprintf("store %s: %s: %v: the store is corrupt; stop postern, move the "+
				"file aside and restore an export", db.path, op, err),
			kind:  ErrCorrupt,
			cause: err,
		}
	}
	return fmt.Errorf("store %s: %s: %w", db.path, op, err)
}
