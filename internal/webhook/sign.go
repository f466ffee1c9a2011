package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the request header carrying the timestamp and the
// signature: "t=<unix seconds>,v1=<hex HMAC-SHA256>".
const SignatureHeader = "Postern-Signature"

// DefaultReplayWindow is how far a signature's timestamp may be from the
// receiver's clock before Verify refuses it.
const DefaultReplayWindow = 5 * time.Minute

// Errors of Verify.
var (
	ErrBadHeader = errors.New("webhook: malformed " + SignatureHeader + " header")
	ErrSignature = errors.New("webhook: signature does not match")
	ErrStale     = errors.New("webhook: timestamp outside the replay window")
)

// Sign returns the value of the signature header for body sent at t:
// HMAC-SHA256 with secret over "<unix seconds>.<body>".
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a received request as a receiver should: header is the
// Postern-Signature value, body the raw request body (before any JSON
// decoding), now the receiver's clock. It accepts the request when one of
// the header's v1 signatures matches (compared in constant time) and the
// timestamp is within window of now (0: DefaultReplayWindow). A receiver
// that must not act twice on one event also remembers the "id" of the
// events it has seen for at least the window.
func Verify(secret []byte, header string, body []byte, now time.Time, window time.Duration) error {
	if window <= 0 {
		window = DefaultReplayWindow
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrBadHeader
		}
		switch k {
		case "t":
			if ts != "" {
				return ErrBadHeader
			}
			ts = v
		case "v1":
			s, err := hex.DecodeString(v)
			if err != nil || len(s) != sha256.Size {
				return ErrBadHeader
			}
			sigs = append(sigs, s)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 || ts != strconv.FormatInt(sec, 10) {
		return ErrBadHeader
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			ok = true
		}
	}
	if !ok {
		return ErrSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > window || d < -window {
		return fmt.Errorf("%w: signed %s ago (window %s)", ErrStale, d.Round(time.Second), window)
	}
	return nil
}
