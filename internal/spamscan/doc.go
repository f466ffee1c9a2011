// Package spamscan scores messages with an external spam scanner: rspamd
// over its HTTP protocol (NewRspamd) or SpamAssassin's spamd (NewSpamd),
// both behind the Scanner interface, and holds a message while it is
// received (Spool: memory up to a limit, then a temporary file).
//
// A scanner never loses or blocks mail: every Scan is bounded by its
// timeout, and on any error (scanner down, slow, answering garbage, message
// too large) the SMTP gateway accepts the message and logs the error.
//
// # rspamd
//
// Scan POSTs the message to {url}/checkv2 of a normal worker (port 11333 by
// default) or proxy worker, with the envelope in the headers IP, From (the
// null sender as "<>"), Rcpt (one header per recipient), Helo, User,
// Queue-Id, Password (if set) and Content-Length. Control characters in
// envelope values are replaced by '?', so odd client input cannot make the
// request invalid. The JSON answer gives Verdict.Score ("score"),
// Threshold ("required_score"), Action ("action") and Symbols (the keys of
// "symbols"). rspamd's default reject threshold is 15; GTUBE gets action
// "reject" with a score equal to that threshold.
//
// # spamd
//
// Scan sends "SYMBOLS SPAMC/1.5" with Content-length and reads "Spam: True
// ; 15.3 / 5.0" (score / threshold) and the comma-separated rule names.
// Only a fake spamd is used in the tests.
//
// # The rspamd end-to-end test
//
// TestRspamdEndToEnd runs when POSTERN_E2E=1 (it skips otherwise, and
// fails rather than skips under POSTERN_E2E=1 if rspamd cannot be had). It
// needs Debian's rspamd package (Debian 12: rspamd 3.4; redis-server, only
// recommended, is not used). CI installs it without starting a system
// daemon:
//
//	[ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
//	    chmod +x /usr/sbin/policy-rc.d; made_policy=1; }
//	apt-get update -qq
//	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rspamd
//	[ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
//
// When rspamd is missing and the test runs as root it does the same itself
// (waiting up to 180 s for another apt-get to finish); as another user it
// fails and says what to install. The install takes 4-6 s here, apt-get
// update included.
//
// The test's rspamd is started by package rspamdtest (shared with the
// end-to-end suite in test/e2e, which adds one rule of its own). It writes a
// configuration directory DIR of its own and starts, in the foreground,
//
//	rspamd -f -c DIR/rspamd.conf --var=CONFDIR=/etc/rspamd \
//	       --var=LOCAL_CONFDIR=DIR --var=DBDIR=DIR --var=RUNDIR=DIR --var=LOGDIR=DIR [-i]
//
// with -i (insecure) only as root, where rspamd would otherwise insist on
// -u/-g. DIR/rspamd.conf includes the stock rules ($CONFDIR/common.conf:
// metrics, actions, groups, composites, modules.d) and replaces the rest:
//
//	options {
//	    pidfile = "$RUNDIR/rspamd.pid";
//	    filters = "chartable,regexp";             # no dkim, no fuzzy_check
//	    url_tld = "${SHAREDIR}/effective_tld_names.dat";
//	    hs_cache_dir = "<cache dir, kept between runs>";
//	    allow_raw_input = true;
//	    task_timeout = 8s;
//	    dns { nameserver = ["127.0.0.1:9"]; timeout = 100ms; retransmits = 1; }
//	}
//	logging { type = "console"; level = "warning"; }
//	worker "normal" { bind_socket = "127.0.0.1:<free port>"; count = 1; mime = true; }
//
// No controller, proxy or fuzzy worker and no Redis (the modules that need
// it disable themselves). DNS goes to 127.0.0.1:9, where nothing answers,
// so nothing leaves the machine. DIR/local.d/<module>.conf holds
// "enabled = false;" for the modules whose results depend on working DNS
// or the network: hfilter, rbl, asn, spf, dkim, dmarc, arc, mx_check,
// url_redirector, fuzzy_check. The client IP sent is 203.0.113.7.
//
// The first start on a machine compiles rspamd's hyperscan databases (the
// public-suffix list above all) and takes about 9-10 s; the test keeps that
// cache (about 90 MB) in postern-test/rspamd-hs under the user cache
// directory (os.UserCacheDir: $XDG_CACHE_HOME or ~/.cache), or
// POSTERN_RSPAMD_CACHE, and later starts take about 0.4-0.6 s. The test
// waits at most 60 s for /ping, scans, and stops rspamd's process group
// (SIGTERM, SIGKILL after 10 s). Results with rspamd 3.4: GTUBE gets action
// "reject" with score 15.00 (= required_score: rspamd sets the score of a
// forced action to its threshold); the clean message scores 1.00, "no
// action" (RDNS_NONE, as no Hostname header is sent). A scan takes
// 1-100 ms.
package spamscan
