package logline

import (
	"sync/atomic"
	"time"
)

// clockCache formats a record's time from the text of its second, made
// once a second: the date, the time of day and the zone's offset are the
// same for every line of a second, and formatting them was a fifth of a
// line's work.
type clockCache struct {
	p atomic.Pointer[second]
}

// second is the text of one second in one location.
type second struct {
	unix int64
	loc  *time.Location
	head []byte // 2006-01-02T15:04:05
	zone []byte // Z07:00
}

// append appends t in RFC 3339: with milliseconds, always three digits,
// truncated (the text format's), or else with nanoseconds, trailing zeros
// and a bare point dropped (RFC3339Nano, the JSON format's).
func (c *clockCache) append(b []byte, t time.Time, millis bool) []byte {
	sec := c.p.Load()
	if sec == nil || sec.unix != t.Unix() || sec.loc != t.Location() {
		sec = newSecond(t)
		c.p.Store(sec)
	}
	b = append(b, sec.head...)
	ns := t.Nanosecond()
	if millis {
		ms := ns / 1e6
		b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	} else if ns != 0 {
		var f [10]byte
		f[0] = '.'
		for i := 9; i >= 1; i-- {
			f[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for f[n-1] == '0' {
			n--
		}
		b = append(b, f[:n]...)
	}
	return append(b, sec.zone...)
}

// newSecond formats t's second.
func newSecond(t time.Time) *second {
	s := t.Truncate(time.Second)
	text := s.AppendFormat(make([]byte, 0, 32), time.RFC3339)
	const headLen = len("2006-01-02T15:04:05")
	return &second{unix: t.Unix(), loc: t.Location(), head: text[:headLen:headLen], zone: text[headLen:]}
}
