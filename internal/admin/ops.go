package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/postern/postern/internal/store"
)

// The operations below are the API's own, for other administration
// front-ends (the web console): the same checks, the same self-lockout
// guard, the same engine calls. client is the address of the person
// asking; an invalid client has no address (the unix socket) and the
// self-lockout guard does not apply.

// ErrLockout is returned (wrapped) by AddBlock and AmendBlocks when the
// change would block the client's own address and force is not set.
var ErrLockout = errors.New("self-lockout")

// errLockout is ErrLockout as the API answers it: 409.
var errLockout = &httpError{status: http.StatusConflict, msg: LockoutMessage}

// AddBlock checks req and blocks its target by hand (reason U) for actor.
// Errors that are the caller's fault wrap ErrBadRequest, or ErrLockout.
// It returns the block and a line saying what was done.
func AddBlock(ctx context.Context, eng Engine, req AddRequest, client netip.Addr, actor string) (store.Block, string, error) {
	if strings.TrimSpace(req.Target) == "" {
		return store.Block{}, "", errorf(http.StatusBadRequest, "target: missing: want an address or a prefix such as 203.0.113.7 or 2001:db8::/64")
	}
	p, err := ParseTarget(req.Target)
	if err != nil {
		return store.Block{}, "", errorf(http.StatusBadRequest, "target: %v", err)
	}
	if err := checkBlockable(p); err != nil {
		return store.Block{}, "", errorf(http.StatusBadRequest, "target: %v", err)
	}
	d, err := ParseBlockDuration(req.Duration)
	if err != nil {
		return store.Block{}, "", errorf(http.StatusBadRequest, "duration: %v", err)
	}
	if len(req.Comment) > maxCommentBytes {
		return store.Block{}, "", errorf(http.StatusBadRequest, "comment: longer than %d bytes", maxCommentBytes)
	}
	forced := ""
	if client.IsValid() && p.Contains(client) {
		if !req.Force {
			return store.Block{}, "", errLockout
		}
		forced = " (forced: holds the client's own address)"
	}
	b, err := eng.BlockManual(ctx, p, d, req.Comment, actor)
	if err != nil {
		return store.Block{}, "", fmt.Errorf("block %s: %w", FormatTarget(p), err)
	}
	return b, "blocked " + FormatTarget(p) + forced, nil
}

// Amend says how AmendBlocks changes blocks: Extend adds to the expiry
// (from now when the block has expired), Comment, when set, replaces the
// comment.
type Amend struct {
	Extend  time.Duration
	Comment *string
	Force   bool // amend even a block holding the client's own address
}

// AmendBlocks extends or comments the blocks of exactly these prefixes,
// through the engine's import (so the audit log records an import by
// actor). A block that never expires stays so. It returns how many blocks
// were changed; prefixes not blocked are skipped.
func AmendBlocks(ctx context.Context, eng Engine, prefixes []netip.Prefix, a Amend, client netip.Addr, actor string) (int, error) {
	if a.Extend < 0 || a.Extend > MaxBlockDuration {
		return 0, errorf(http.StatusBadRequest, "extend: want a duration up to %dd", MaxBlockDuration/(24*time.Hour))
	}
	if a.Comment != nil && len(*a.Comment) > maxCommentBytes {
		return 0, errorf(http.StatusBadRequest, "comment: longer than %d bytes", maxCommentBytes)
	}
	now := eng.Now()
	var out []store.Block
	for _, b := range eng.Blocks() {
		if !slices.Contains(prefixes, b.Prefix) {
			continue
		}
		if a.Extend > 0 && !b.Expires.IsZero() {
			from := b.Expires
			if from.Before(now) {
				from = now
			}
			b.Expires = from.Add(a.Extend)
		}
		if a.Comment != nil {
			b.Comment = *a.Comment
		}
		if client.IsValid() && !a.Force && !b.Expired(now) && b.Prefix.Contains(client) {
			return 0, errLockout
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return 0, nil
	}
	n, err := eng.Import(ctx, out, actor)
	if err != nil {
		return 0, fmt.Errorf("amend: %w", err)
	}
	return n, nil
}

// ParseFilter decodes a block filter from query parameters as GET
// /v1/blocks reads them (reason, service, search, active, since, until,
// expires_before) and checks its window at now.
func ParseFilter(q url.Values, now time.Time) (Filter, error) {
	f, err := parseFilter(q)
	if err != nil {
		return f, err
	}
	return f, f.check(now)
}

// Blocks returns the blocks passing f, in the API's order, as the API
// shows them at the engine's clock.
func Blocks(eng Engine, f Filter) []Block {
	now := eng.Now()
	all := eng.Blocks()
	bs := make([]store.Block, 0, len(all))
	for i := range all {
		if f.Match(&all[i], now) {
			bs = append(bs, all[i])
		}
	}
	return apiBlocks(bs, now)
}

// NewAuditEntry converts a store audit entry as the API shows it.
func NewAuditEntry(e store.AuditEntry) AuditEntry { return newAuditEntry(e) }

// Export writes every block in format (FormatCSV or FormatJSON) as GET
// /v1/blocks/export does.
func Export(w io.Writer, eng Engine, format string) error {
	now := eng.Now()
	bs := slices.Clone(eng.Blocks())
	sortBlocks(bs)
	switch format {
	case FormatCSV:
		return writeCSV(w, bs)
	case FormatJSON:
		return writeJSONTo(w, blockList{Blocks: apiBlocks(bs, now)})
	}
	return errorf(http.StatusBadRequest, "format: want csv or json, got %q", format)
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// Is makes an API error match ErrBadRequest (400) and ErrLockout (409),
// for front-ends that call the operations directly.
func (e *httpError) Is(target error) bool {
	return target == ErrBadRequest && e.status == http.StatusBadRequest ||
		target == ErrLockout && e.status == http.StatusConflict
}

// ImportBlocks reads blocks in the CSV (mediaType "text/csv") or JSON
// ("application/json") export format from in, checks every row, and
// imports them all or none for actor. Without force, a block that holds
// client's own address is refused (ErrLockout). Errors in the data match
// ErrBadRequest; a body over a http.MaxBytesReader limit is returned as
// its *http.MaxBytesError.
func ImportBlocks(ctx context.Context, eng Engine, in io.Reader, mediaType string, force bool, client netip.Addr, actor string) (int, error) {
	now := eng.Now()
	var bs []store.Block
	var err error
	switch mediaType {
	case "text/csv":
		bs, err = DecodeCSV(in, now)
	case "application/json":
		bs, err = DecodeJSON(in, now)
	default:
		return 0, errorf(http.StatusUnsupportedMediaType, "Content-Type must be text/csv or application/json")
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return 0, mbe
		}
		return 0, badRequest(err)
	}
	for _, b := range bs {
		if err := checkBlockable(b.Prefix); err != nil {
			return 0, badRequest(err)
		}
		if client.IsValid() && !force && !b.Expired(now) && b.Prefix.Contains(client) {
			return 0, errorf(http.StatusConflict, "the import blocks %s, which holds your own address %s; send force=true to do it anyway", FormatTarget(b.Prefix), client)
		}
	}
	n, err := eng.Import(ctx, bs, actor)
	if err != nil {
		return 0, fmt.Errorf("import: %w", err)
	}
	return n, nil
}
