package logline

import (
	"log/slog"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// The functions here format as log/slog's handlers do (Go 1.26,
// log/slog/handler.go, text_handler.go and json_handler.go); the
// package's tests compare every line with slog's.

// appendText appends str as the text format writes a key or a string:
// quoted with strconv.Quote when needsQuoting.
func appendText(b []byte, str string) []byte {
	if needsQuoting(str) {
		return strconv.AppendQuote(b, str)
	}
	return append(b, str...)
}

// needsQuoting reports whether the text format quotes s: when it is
// empty, or has a space, '=', a character a JSON string escapes (other
// than a backslash), invalid UTF-8, or a Unicode space or non-printing
// character.
func needsQuoting(s string) bool {
	if len(s) == 0 {
		return true
	}
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b != '\\' && (b == ' ' || b == '=' || !jsonSafe(b)) {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// jsonSafe reports whether the ASCII byte b stands in a JSON string
// unescaped: all but the control characters, '"' and '\'.
func jsonSafe(b byte) bool { return b >= 0x20 && b != '"' && b != '\\' }

const hex = "0123456789abcdef"

// appendEscapedJSONString appends s escaped for a JSON string, without
// the quotes: control characters, '"' and '\', invalid UTF-8 as U+FFFD,
// and U+2028 and U+2029 escaped; '<', '>' and '&' are not.
func appendEscapedJSONString(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			b = append(b, '\\')
			switch c {
			case '\\', '"':
				b = append(b, c)
			case '\n':
				b = append(b, 'n')
			case '\r':
				b = append(b, 'r')
			case '\t':
				b = append(b, 't')
			default:
				b = append(b, 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

func appendInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }

// appendScalar appends an integer or a boolean, the same in both formats.
func appendScalar(b []byte, v slog.Value) []byte {
	switch v.Kind() {
	case slog.KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10)
	case slog.KindUint64:
		return strconv.AppendUint(b, v.Uint64(), 10)
	default:
		return strconv.AppendBool(b, v.Bool())
	}
}
