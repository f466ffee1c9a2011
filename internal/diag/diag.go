// Package diag carries source positions and position-bearing errors shared by
// the configuration loader, the pattern compiler and the GeoIP loaders, so an
// administrator always learns which file, line and column is at fault.
package diag

import (
	"errors"
	"fmt"
	"strings"
)

// Pos is a position in a source file. Line and Col are 1-based; a zero Line
// means the position is the whole file and a zero Col means the whole line.
type Pos struct {
	File string
	Line int
	Col  int
}

// String formats p as file:line:col, leaving out the parts that are unknown.
func (p Pos) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
		if p.Col > 0 {
			fmt.Fprintf(&b, ":%d", p.Col)
		}
	}
	return b.String()
}

// IsValid reports whether p names a file.
func (p Pos) IsValid() bool { return p.File != "" }

// Error is an error at a source position.
type Error struct {
	Pos Pos
	Msg string
	Err error // optional underlying cause, reachable with errors.Unwrap
}

// Errorf returns an *Error at pos with a formatted message. A %w verb in
// format makes the wrapped error the cause.
func Errorf(pos Pos, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Pos: pos, Msg: err.Error(), Err: errors.Unwrap(err)}
}

func (e *Error) Error() string {
	if !e.Pos.IsValid() {
		return e.Msg
	}
	return e.Pos.String() + ": " + e.Msg
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// List collects several errors so that one run reports every problem in a
// file instead of stopping at the first.
type List []error

// Add appends err to l unless it is nil. A List added to a List is flattened.
func (l *List) Add(err error) {
	if err == nil {
		return
	}
	var sub List
	if errors.As(err, &sub) {
		*l = append(*l, sub...)
		return
	}
	*l = append(*l, err)
}

// Err returns nil for an empty list and the list itself otherwise.
func (l List) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

func (l List) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap exposes the collected errors to errors.Is and errors.As.
func (l List) Unwrap() []error { return l }
