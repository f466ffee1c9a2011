package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/postern/postern/internal/explain"
)

// Client timeouts.
const (
	dialTimeout           = 5 * time.Second
	responseHeaderTimeout = 5 * time.Minute // an import of a large file
	clientTimeout         = 10 * time.Minute
	maxErrorBody          = 64 << 10
)

// Client calls the administration API of a running postern. It is safe
// for concurrent use.
type Client struct {
	listen string
	token  string
	hc     *http.Client
	err    error // a bad listen address, returned by every call
}

// APIError is an error answer of the API: its HTTP status and message.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, http.StatusText(e.Status))
}

// NewClient returns a client for the API at listen ("unix:/path" or
// "tcp:host:port") that authenticates with token. A bad listen address is
// reported by the first call.
func NewClient(listen, token string) *Client {
	c := &Client{listen: listen, token: token}
	network, addr, err := splitListen(listen)
	if err != nil {
		c.err = err
	}
	d := &net.Dialer{Timeout: dialTimeout}
	tr := &http.Transport{
		// The admin API is never reached through an HTTP proxy.
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		ResponseHeaderTimeout: responseHeaderTimeout,
		IdleConnTimeout:       30 * time.Second,
		MaxIdleConnsPerHost:   16,
		DisableCompression:    true,
	}
	c.hc = &http.Client{Transport: tr, Timeout: clientTimeout}
	return c
}

// CloseIdleConnections closes the client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Health checks that the API answers and returns the engine's clock.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.do(ctx, http.MethodGet, "/v1/health", nil, nil, "", &h)
	return h, err
}

// ListBlocks returns the blocks f selects, most recently seen first.
func (c *Client) ListBlocks(ctx context.Context, f Filter) ([]Block, error) {
	var l blockList
	err := c.do(ctx, http.MethodGet, "/v1/blocks", f.values(), nil, "", &l)
	return l.Blocks, err
}

// AddBlock blocks target by hand for d (0: the configured block time).
// force blocks it even when it holds the client's own address (TCP only).
func (c *Client) AddBlock(ctx context.Context, target netip.Prefix, d time.Duration, comment string, force bool) (Block, error) {
	req := AddRequest{Target: FormatTarget(target), Comment: comment, Force: force}
	if d != 0 {
		req.Duration = d.String()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return Block{}, err
	}
	var b Block
	err = c.do(ctx, http.MethodPost, "/v1/blocks", nil, bytes.NewReader(body), "application/json", &b)
	return b, err
}

// RemoveBlocks removes the blocks of exactly these targets and returns how
// many there were; none is an APIError with status 404.
func (c *Client) RemoveBlocks(ctx context.Context, targets []netip.Prefix) (int, error) {
	q := url.Values{}
	for _, t := range targets {
		q.Add("target", FormatTarget(t))
	}
	var out struct{ Removed int }
	err := c.do(ctx, http.MethodDelete, "/v1/blocks", q, nil, "", &out)
	return out.Removed, err
}

// PurgeExpired removes the expired blocks and returns how many.
func (c *Client) PurgeExpired(ctx context.Context) (int, error) {
	var out struct{ Purged int }
	err := c.do(ctx, http.MethodPost, "/v1/blocks/purge-expired", nil, nil, "", &out)
	return out.Purged, err
}

// RemoveAll removes every block and returns how many.
func (c *Client) RemoveAll(ctx context.Context) (int, error) {
	var out struct{ Removed int }
	err := c.do(ctx, http.MethodDelete, "/v1/blocks", url.Values{"all": {"true"}}, nil, "", &out)
	return out.Removed, err
}

// Export returns every block in format (FormatCSV or FormatJSON).
func (c *Client) Export(ctx context.Context, format string) ([]byte, error) {
	var buf bytes.Buffer
	err := c.do(ctx, http.MethodGet, "/v1/blocks/export", url.Values{"format": {format}}, nil, "", &buf)
	return buf.Bytes(), err
}

// Import adds the blocks in data (format FormatCSV or FormatJSON, as
// Export writes them), all or none, and returns how many. force imports
// even blocks that hold the client's own address (TCP only).
func (c *Client) Import(ctx context.Context, format string, data []byte, force bool) (int, error) {
	ctype := "application/json"
	switch format {
	case FormatCSV:
		ctype = "text/csv"
	case FormatJSON:
	default:
		return 0, fmt.Errorf("import: unknown format %q: want csv or json", format)
	}
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	var out struct{ Imported int }
	err := c.do(ctx, http.MethodPost, "/v1/blocks/import", q, bytes.NewReader(data), ctype, &out)
	return out.Imported, err
}

// Audit returns up to limit audit-log entries at or after since (zero:
// from the start); limit 0 asks for the server's default.
func (c *Client) Audit(ctx context.Context, since time.Time, limit int) ([]AuditEntry, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var l auditList
	err := c.do(ctx, http.MethodGet, "/v1/audit", q, nil, "", &l)
	return l.Entries, err
}

// Explain asks the running gateway why q.Addr may or may not use
// q.Service (request q.Path, log in as q.Account): its running
// configuration and its live blocks answer.
func (c *Client) Explain(ctx context.Context, q explain.Query) (explain.Answer, error) {
	v := url.Values{"ip": {q.Addr.String()}}
	for k, s := range map[string]string{"service": q.Service, "account": q.Account, "path": q.Path} {
		if s != "" {
			v.Set(k, s)
		}
	}
	var a explain.Answer
	err := c.do(ctx, http.MethodGet, "/v1/explain", v, nil, "", &a)
	return a, err
}

// do sends one request and decodes a 2xx answer into out (a
// *bytes.Buffer takes the body as is). Other answers become an *APIError.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string, out any) error {
	if c.err != nil {
		return c.err
	}
	u := "http://postern" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("cannot reach postern at %s: %w (is postern serve running?)", c.listen, unwrapOpError(op))
		}
		return fmt.Errorf("admin API at %s: %w", c.listen, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if buf, ok := out.(*bytes.Buffer); ok {
		if _, err := buf.ReadFrom(resp.Body); err != nil {
			return fmt.Errorf("admin API at %s: reading the answer: %w", c.listen, err)
		}
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin API at %s: bad answer: %w", c.listen, err)
	}
	return nil
}

// unwrapOpError drops the "dial unix /path:" prefix the caller already
// says.
func unwrapOpError(op *net.OpError) error {
	if op.Err != nil {
		return op.Err
	}
	return op
}
