// Package loginattack holds the end-to-end tests and the benchmark of
// postern's failed-login defence against the project's real Dovecot 2.3
// and Postfix 3.7 (internal/testenv): postern's IMAP, POP3 and SMTP
// submission gateways and its intrusion prevention engine run in the test
// process, in front of the backends' PROXY ports, and every count of
// failures that reached the backend is read from Dovecot's own log
// ("Password mismatch", one line per checked password; Postfix checks SMTP
// AUTH passwords with Dovecot's SASL).
//
//	sudo POSTERN_E2E=1 go test ./bench/loginattack/                              # the tests
//	sudo POSTERN_E2E=1 go test -run '^$' -bench Attack -benchtime 1x ./bench/loginattack/   # the attack benchmark
//
// Dovecot runs with its default auth_failure_delay of 2 s, as in
// production: every wrong password is answered two seconds late, so an
// attack has many attempts in flight when the threshold is reached.
package loginattack
