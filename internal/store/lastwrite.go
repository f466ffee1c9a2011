package store

import (
	"context"
	"errors"
	"time"
)

// WriteResult is the outcome of one write transaction.
type WriteResult struct {
	Time time.Time // when it ended
	Op   string    // what it wrote ("put 3 blocks", …)
	Err  error     // nil: committed
}

// LastWrite returns the outcome of the last write transaction, and false
// when there has been none since Open.
func (db *DB) LastWrite() (WriteResult, bool) {
	if r := db.lastWrite.Load(); r != nil {
		return *r, true
	}
	return WriteResult{}, false
}

// noteWrite records a write's outcome; a write its caller cancelled says
// nothing of the store and is not recorded.
func (db *DB) noteWrite(op string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	db.lastWrite.Store(&WriteResult{Time: time.Now(), Op: op, Err: err})
	return err
}
