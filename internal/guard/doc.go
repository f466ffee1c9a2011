// Package guard is postern's intrusion prevention engine. Protocol
// front-ends only report what they see — a connection, a failed login, an
// unknown recipient, an RSET, a message's size — and obey the action of the
// Verdict (Engine.Accept, the one connection gate) or Decision they get
// back; all counting, thresholds, bypass rules and blocking live here,
// once.
//
// The accept path (Admit, the first half of Accept) reads an immutable Settings and a copy-on-write
// table of blocks through atomic pointers: it takes no lock and does not
// allocate. Events update sharded counters. A block is put into the
// in-memory table first (so Admit enforces it at once), then written to the
// store in a group commit, and only then reported to the caller and the log.
//
// Every login attempt goes through Session.BeginLogin before its
// credentials reach the backend: it reads the block table at that moment
// and counts the attempt as pending until Login.Failed, Succeeded or
// Abandon, holding further attempts while failures plus pending attempts
// are at the threshold, so that no more than failed_logins failures reach
// the backend however many attempts are in flight.
package guard
