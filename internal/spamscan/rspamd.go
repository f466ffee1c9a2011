package spamscan

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultRspamdTimeout bounds one rspamd scan when RspamdOptions.Timeout is 0.
const DefaultRspamdTimeout = 10 * time.Second

// maxReply bounds the rspamd answer read; real answers are a few KiB.
const maxReply = 4 << 20

// RspamdOptions configures an Rspamd scanner. The zero value is usable.
type RspamdOptions struct {
	// Timeout bounds one scan, sending included (default DefaultRspamdTimeout).
	Timeout time.Duration
	// Password is sent in the "Password" header if set (needed by a
	// controller worker with a password, ignored by a normal worker).
	Password string
	// Client sends the requests (default: a client of the scanner's own).
	Client *http.Client
	// MaxSize, if positive, is the largest message scanned: larger ones
	// get ErrTooLarge at once, without contacting rspamd.
	MaxSize int64
}

// Rspamd scans messages with rspamd over its HTTP protocol. Safe for
// concurrent use.
type Rspamd struct {
	endpoint string
	opts     RspamdOptions
	client   *http.Client
}

// NewRspamd returns a Scanner for rspamd's HTTP protocol at url, the base
// URL of a normal or proxy worker (e.g. "http://127.0.0.1:11333"): each
// Scan POSTs the message to {url}/checkv2 with headers IP, From, Rcpt (one
// header per recipient), Helo, User, Queue-Id, Content-Length and, if set,
// Password, and reads the JSON answer {score, required_score, action,
// symbols{...}}.
func NewRspamd(url string, opts RspamdOptions) *Rspamd {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultRspamdTimeout
	}
	client := opts.Client
	if client == nil {
		client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return &Rspamd{endpoint: strings.TrimRight(url, "/") + "/checkv2", opts: opts, client: client}
}

// Name returns "rspamd".
func (r *Rspamd) Name() string { return "rspamd" }

// rspamdReply is the part of rspamd's /checkv2 answer that is used.
type rspamdReply struct {
	Score         *float64 `json:"score"`
	RequiredScore float64  `json:"required_score"`
	Action        string   `json:"action"`
	Symbols       map[string]struct {
		Score float64 `json:"score"`
	} `json:"symbols"`
	Error string `json:"error"`
}

// Scan sends msg to rspamd and returns its verdict. It fails, without
// panicking, on a message larger than MaxSize (ErrTooLarge), a body shorter
// than msg.Size, a timeout, a non-200 status, an error answer or JSON it
// cannot read.
func (r *Rspamd) Scan(ctx context.Context, msg Message) (Verdict, error) {
	switch {
	case msg.Body == nil:
		return Verdict{}, errors.New("rspamd: message has no body")
	case msg.Size < 0:
		return Verdict{}, fmt.Errorf("rspamd: negative message size %d", msg.Size)
	case r.opts.MaxSize > 0 && msg.Size > r.opts.MaxSize:
		return Verdict{}, fmt.Errorf("rspamd: %d bytes, limit %d: %w", msg.Size, r.opts.MaxSize, ErrTooLarge)
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.endpoint, io.NewSectionReader(msg.Body, 0, msg.Size))
	if err != nil {
		return Verdict{}, fmt.Errorf("rspamd: %w", err)
	}
	req.ContentLength = msg.Size
	if msg.Size == 0 {
		req.Body = http.NoBody
	}
	h := req.Header
	if msg.IP.IsValid() {
		h.Set("IP", msg.IP.Unmap().WithZone("").String())
	}
	if msg.From == "" {
		h.Set("From", "<>") // the null sender
	} else {
		h.Set("From", headerValue(msg.From))
	}
	for _, rcpt := range msg.Rcpt {
		if rcpt != "" {
			h.Add("Rcpt", headerValue(rcpt))
		}
	}
	setIf(h, "Helo", msg.Helo)
	setIf(h, "User", msg.User)
	setIf(h, "Queue-Id", msg.QueueID)
	setIf(h, "Password", r.opts.Password)

	resp, err := r.client.Do(req)
	if err != nil {
		return Verdict{}, fmt.Errorf("rspamd: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil {
		return Verdict{}, fmt.Errorf("rspamd: reading the answer: %w", err)
	}
	if len(data) > maxReply {
		return Verdict{}, fmt.Errorf("rspamd: answer longer than %d bytes", maxReply)
	}
	if resp.StatusCode != http.StatusOK {
		return Verdict{}, fmt.Errorf("rspamd: %s: %s", resp.Status, snippet(data))
	}
	var reply rspamdReply
	if err := json.Unmarshal(data, &reply); err != nil {
		return Verdict{}, fmt.Errorf("rspamd: bad answer %s: %w", snippet(data), err)
	}
	if reply.Error != "" {
		return Verdict{}, fmt.Errorf("rspamd: %s", snippet([]byte(reply.Error)))
	}
	if reply.Score == nil {
		return Verdict{}, fmt.Errorf("rspamd: answer without a score: %s", snippet(data))
	}
	syms := make([]symbolScore, 0, len(reply.Symbols))
	for name, s := range reply.Symbols {
		syms = append(syms, symbolScore{name, s.Score})
	}
	return Verdict{
		Score:     *reply.Score,
		Threshold: reply.RequiredScore,
		Action:    reply.Action,
		Symbols:   topSymbols(syms),
	}, nil
}

func setIf(h http.Header, key, value string) {
	if value != "" {
		h.Set(key, headerValue(value))
	}
}

// headerValue makes s a valid HTTP header value by replacing control
// characters (other than tab) with '?'. Envelope data comes from the
// client: a control character in HELO must not make the scan fail.
func headerValue(s string) string {
	if !strings.ContainsFunc(s, isCtl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isCtl(r) {
			return '?'
		}
		return r
	}, s)
}

func isCtl(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }

// snippet quotes the start of a server's answer for an error message.
func snippet(b []byte) string {
	const max = 200
	b = bytes.TrimSpace(b)
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}
