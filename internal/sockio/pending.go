package sockio

import "errors"

// ErrPending is WriteRead's error for a connection meant to be idle that
// had bytes or the end of the stream waiting: nothing was written.
var ErrPending = errors.New("sockio: bytes or the end of the stream were waiting on an idle connection")
