// Package decoy derives the password postern gives a backend in place of
// the client's when postern itself refuses a login (the login IP
// restriction). The backend is asked with the account the client named and
// the decoy, fails the login as it fails any wrong password, and its answer
// is relayed: the refusal then carries the backend's own text and takes the
// backend's own time (failure delay, auth penalty, password hashing), from
// the first login after start, and the client's password never leaves
// postern.
package decoy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
)

// Size is the length of a decoy password: hexadecimal digits only, so that
// every protocol carries it without quoting (IMAP LOGIN, POP3 PASS, SASL).
const Size = 32

// Passwords derives decoy passwords with a key drawn at start-up. It is
// safe for concurrent use.
type Passwords struct {
	key [32]byte
}

// New returns a Passwords with a fresh random key.
func New() *Passwords {
	d := &Passwords{}
	rand.Read(d.key[:]) // never fails (crypto/rand crashes the program instead)
	return d
}

// Password returns the decoy for a client's password: Size hexadecimal
// digits, the same for the same password while the process runs (a backend
// that treats a repeated wrong password differently from a new one, as
// Dovecot's auth penalty does, sees a repeat as a repeat) and different for
// different passwords; without the key it says nothing of the password.
// The chance that a decoy is an account's real password is 2^-128; a
// backend that accepts it anyway (a passdb that checks no password) is the
// front-end's to handle: the login must still be refused.
func (d *Passwords) Password(password string) string {
	m := hmac.New(sha256.New, d.key[:])
	m.Write([]byte(password))
	var sum [sha256.Size]byte
	var out [Size]byte
	hex.Encode(out[:], m.Sum(sum[:0])[:Size/2])
	return string(out[:])
}
