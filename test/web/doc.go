// Package web is postern's web gateway end-to-end suite: the real `postern
// serve` binary in front of a real nginx (Debian's package) serving a
// static webmail stand-in — a login page, a login check that answers 401 to
// a wrong password, an admin area — and, for the login form evasions, in
// front of nginx proxying to PHP's built-in server (Debian's php-cli) with
// a Roundcube stand-in that reads requests with Roundcube's own rules;
// driven by curl. It runs with POSTERN_E2E=1 and skips otherwise; it has no
// code outside its tests.
package web
