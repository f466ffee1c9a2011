// Package e2e is postern's SMTP end-to-end test suite: the real `postern
// serve` binary in front of the project's real Postfix and Dovecot
// (internal/testenv), a real rspamd and a DNSBL served by the tests, driven
// by real clients (swaks, Python's smtplib). It has no code outside its
// tests; see README.md.
package e2e
