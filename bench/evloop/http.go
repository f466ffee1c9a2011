package main

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"github.com/postern/postern/internal/ascii"
)

// maxHead is the largest request or answer head relayed.
const maxHead = 16 << 10

var crlfcrlf = []byte("\r\n\r\n")

// headLen returns the length of the head at the start of b, blank line
// included, or 0 when b does not hold a whole head yet.
func headLen(b []byte) int {
	i := bytes.Index(b, crlfcrlf)
	if i < 0 {
		return 0
	}
	return i + len(crlfcrlf)
}

var errUnsupported = errors.New("not relayed by this tool")

// eachHeader calls f with every header line's name and value of head
// (status or request line first, skipped).
func eachHeader(head []byte, f func(name, value []byte) error) error {
	_, rest, _ := bytes.Cut(head, []byte("\r\n"))
	for len(rest) > 2 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 {
			return fmt.Errorf("header line %q: %w", line, errUnsupported)
		}
		if err := f(name, bytes.Trim(value, " \t")); err != nil {
			return err
		}
	}
	return nil
}

// checkRequest accepts a GET or HEAD request head of HTTP/1.1 without a
// body; it reports whether it is a HEAD.
func checkRequest(head []byte) (isHead bool, err error) {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	switch {
	case bytes.HasPrefix(line, []byte("GET ")):
	case bytes.HasPrefix(line, []byte("HEAD ")):
		isHead = true
	default:
		return false, fmt.Errorf("request line %q: %w", line, errUnsupported)
	}
	if !bytes.HasSuffix(line, []byte(" HTTP/1.1")) {
		return false, fmt.Errorf("request line %q: %w", line, errUnsupported)
	}
	return isHead, eachHeader(head, func(name, _ []byte) error {
		if ascii.EqualFold(string(name), "Content-Length") || ascii.EqualFold(string(name), "Transfer-Encoding") {
			return fmt.Errorf("a request with a body: %w", errUnsupported)
		}
		return nil
	})
}

// bodyLen returns the length of the body that follows an answer's head,
// for an answer to a HEAD request when isHead: only answers of HTTP/1.1
// with a final status and, where a body follows, one Content-Length.
func bodyLen(head []byte, isHead bool) (int64, error) {
	if len(head) < 12 || !bytes.HasPrefix(head, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("status line: %w", errUnsupported)
	}
	code, err := strconv.Atoi(string(head[9:12]))
	if err != nil || code < 200 {
		return 0, fmt.Errorf("status %q: %w", head[9:12], errUnsupported)
	}
	n := int64(-1)
	err = eachHeader(head, func(name, value []byte) error {
		switch {
		case ascii.EqualFold(string(name), "Transfer-Encoding"):
			return fmt.Errorf("Transfer-Encoding: %w", errUnsupported)
		case ascii.EqualFold(string(name), "Content-Length"):
			v, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || v < 0 || n >= 0 {
				return fmt.Errorf("Content-Length %q: %w", value, errUnsupported)
			}
			n = v
		}
		return nil
	})
	switch {
	case err != nil:
		return 0, err
	case isHead || code == 204 || code == 304:
		return 0, nil
	case n < 0:
		return 0, fmt.Errorf("an answer without Content-Length: %w", errUnsupported)
	}
	return n, nil
}
