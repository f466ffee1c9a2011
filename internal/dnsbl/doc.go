// Package dnsbl looks client addresses up on DNS zones: DNS blocklists
// (DNSBL, "is this address listed?") at SMTP connect and, with the same
// mechanism, DNS whitelists (DNSWL, the bypass file's `w:` items).
//
// # Queries
//
// An address is looked up as a name under each zone, following RFC 5782:
// an IPv4 address by its four octets reversed (203.0.113.7 on
// zen.example.org asks for 7.113.0.203.zen.example.org), an IPv6 address by
// its 32 nibbles reversed. IPv4-mapped IPv6 addresses are looked up as IPv4
// and IPv6 scope zones (%eth0) are ignored. The name is asked for A
// records; if the answer says "listed", its TXT record is fetched as the
// reason, best effort.
//
// # Answers
//
//   - A records in 127.0.0.0/8: listed, the records are the return codes.
//   - 127.255.255.0/24 (Spamhaus: 252 typo in the zone name, 254 query
//     through a public or open resolver, 255 too many queries) and
//     127.0.0.255 (dnswl.org: access blocked): the zone refused to answer.
//     Not listed; Result.Err wraps ErrRefused, which tells the operator to
//     use a resolver of their own.
//   - Records outside 127.0.0.0/8 (a zone that died and now resolves
//     everything to a parking page): not listed; Err wraps ErrBadAnswer.
//   - NXDOMAIN or no A record: not listed, no error.
//   - A timeout, SERVFAIL, a refused or unreachable resolver: not listed,
//     Err set. A broken or slow DNSBL never blocks mail.
//
// # Resolver, cache and concurrency
//
// Options.Resolver names the DNS server to ask (UDP, and TCP when an answer
// is truncated; Go's resolver does the fallback); empty means the system
// resolver. Each lookup, A and TXT together, is bounded by Options.Timeout.
// Listed and not-listed answers are cached for Options.CacheTTL in a cache
// of bounded size that evicts the oldest entry first; errors, refusals and
// odd answers are not cached, so a zone that recovers is used again at
// once. Concurrent identical lookups share one query. A lookup that every
// caller stopped waiting for is cancelled; one still wanted ends at the
// latest when its timeout does, so no goroutine outlives its lookup.
//
// A Checker holds no global state and is safe for concurrent use.
package dnsbl
