// Package geoupdate keeps a GeoIP database file fresh from a URL.
//
// Update asks the URL for a newer file with a conditional GET (the ETag
// and Last-Modified of the last download are kept next to the file),
// unpacks a gzip or tar.gz answer (picking the .mmdb, .csv or zone member
// of an archive), bounds the size and the time of the download, and
// checks the new file before it is used: it must load with the geoip
// loader, have at least the configured number of networks, and shrink no
// more than the configured share against the file it replaces. Only then
// is it moved over the old file: written in the file's own directory,
// synced, and renamed in one step, so a reader sees the old file or the
// new one, never a part. A failed download leaves the last good file in
// place.
//
// The package knows nothing of the configuration or of reloading: it
// takes a Source and says whether the file changed.
package geoupdate

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postern/postern/internal/geoip"
	"github.com/postern/postern/internal/safefile"
)

// Source is one database downloaded to a file.
type Source struct {
	// URL is asked for the file (http or https). A user and password in
	// it are sent as basic authentication and never logged.
	URL string
	// Path is where the file lives; the download state is kept beside it
	// in Path + StateSuffix.
	Path string
	// Format, Country are as in geoip.Source: the new file is loaded
	// exactly as the configuration will load it.
	Format  geoip.Format
	Country string
	// MaxDrop is the largest share, in percent (0–100), by which the new
	// file's network count may fall below the last good file's; 100
	// accepts any drop.
	MaxDrop float64
	// MinNetworks is the fewest networks a new file may have (at least 1).
	MinNetworks int
}

// StateSuffix names the file beside a database that keeps its download
// state (validators, network count).
const StateSuffix = ".download"

// Defaults of Options.
const (
	DefaultTimeout = 10 * time.Minute
	// DefaultMaxSize bounds the bytes received and the bytes unpacked:
	// the largest MMDB file the geoip loader takes.
	DefaultMaxSize = safefile.MaxDatabase
)

// Options tune an Updater; the zero value takes the defaults.
type Options struct {
	// Client makes the requests; nil: a client with bounded connect,
	// handshake and header times that honours the proxy environment
	// variables.
	Client *http.Client
	// Timeout bounds a whole download, unpacking and checking included.
	Timeout time.Duration
	// MaxSize bounds the bytes received and the bytes unpacked.
	MaxSize int64
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// UserAgent is sent with each request; empty: "postern".
	UserAgent string
}

// Updater downloads databases. It is safe for concurrent use on
// different paths; one path must not be updated by two calls at once.
type Updater struct {
	client    *http.Client
	timeout   time.Duration
	maxSize   int64
	now       func() time.Time
	userAgent string
}

// New returns an Updater with opts.
func New(opts Options) *Updater {
	u := &Updater{client: opts.Client, timeout: opts.Timeout, maxSize: opts.MaxSize, now: opts.Now, userAgent: opts.UserAgent}
	if u.client == nil {
		u.client = defaultClient()
	}
	if u.timeout <= 0 {
		u.timeout = DefaultTimeout
	}
	if u.maxSize <= 0 {
		u.maxSize = DefaultMaxSize
	}
	if u.now == nil {
		u.now = time.Now
	}
	if u.userAgent == "" {
		u.userAgent = "postern"
	}
	return u
}

func defaultClient() *http.Client {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		IdleConnTimeout:       30 * time.Second,
		MaxIdleConns:          4,
		ForceAttemptHTTP2:     true,
	}, CheckRedirect: checkRedirect}
}

// checkRedirect follows at most 10 redirects and never from https to
// plain http, where anyone on the path could change the file.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refusing a redirect from https to %s", req.URL.Redacted())
	}
	return nil
}

// Result says what an Update did.
type Result struct {
	// Changed: a new file was checked and put in place.
	Changed bool
	// NotModified: the server said the file has not changed (304).
	NotModified bool
	// Networks is the network count of the file now in place (0 when
	// unknown: no file yet, or one that does not load).
	Networks int
	// Previous is the network count of the file replaced, 0 when there
	// was none.
	Previous int
}

// State is what is kept beside a downloaded file.
type State struct {
	// URLHash identifies the URL the file came from (a hash, so a
	// password in the URL is not written to disk): validators of another
	// URL are not sent.
	URLHash      string    `json:"url_sha256"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	Networks     int       `json:"networks"`
	Size         int64     `json:"size"`  // of the file when it was written,
	ModTime      time.Time `json:"mtime"` // to notice a file replaced by hand
	Checked      time.Time `json:"checked"`
	Updated      time.Time `json:"updated"`
}

// ReadState returns the download state kept beside the database at path;
// ok is false when there is none or it does not belong to rawURL.
func ReadState(path, rawURL string) (State, bool) {
	data, err := safefile.ReadFile(path+StateSuffix, 64<<10)
	if err != nil {
		return State{}, false
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil || st.URLHash != urlHash(rawURL) {
		return State{}, false
	}
	return st, true
}

// Redact returns rawURL with its password hidden, for logs and errors.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(bad url)"
	}
	return u.Redacted()
}

func urlHash(rawURL string) string {
	h := sha256.Sum256([]byte(rawURL))
	return hex.EncodeToString(h[:])
}

// matches reports whether st describes the file fi as it was written.
func (st State) matches(fi fs.FileInfo) bool {
	return fi.Size() == st.Size && fi.ModTime().Equal(st.ModTime)
}

// Update asks src.URL for a newer file and, if there is one and it is
// good, puts it in place at src.Path. The error says why nothing changed
// (the last good file, if any, stays); it never names the password.
func (u *Updater) Update(ctx context.Context, src Source) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	var res Result
	st, haveState := ReadState(src.Path, src.URL)
	fi, err := os.Stat(src.Path)
	current := err == nil
	switch {
	case current && haveState && st.matches(fi):
		res.Previous = st.Networks
	case current:
		// A file without a state, or changed by hand: count it, and ask
		// for the whole file.
		haveState = false
		if n, err := count(ctx, src, src.Path); err == nil {
			res.Previous = n
		}
	default:
		haveState = false
	}
	res.Networks = res.Previous

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.URL, nil)
	if err != nil {
		return res, fmt.Errorf("download %s: bad url", Redact(src.URL))
	}
	req.Header.Set("User-Agent", u.userAgent)
	if haveState {
		if st.ETag != "" {
			req.Header.Set("If-None-Match", st.ETag)
		}
		if st.LastModified != "" {
			req.Header.Set("If-Modified-Since", st.LastModified)
		}
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return res, fmt.Errorf("download %s: %w", Redact(src.URL), err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && haveState:
		res.NotModified = true
		st.Checked = u.now()
		if err := writeState(src.Path, st); err != nil {
			return res, err
		}
		return res, nil
	case resp.StatusCode != http.StatusOK:
		return res, fmt.Errorf("download %s: %s", Redact(src.URL), resp.Status)
	}

	n, err := u.install(ctx, src, resp.Body, res.Previous)
	if err != nil {
		return res, fmt.Errorf("download %s: %w; the last good file stays", Redact(src.URL), err)
	}
	res.Changed, res.Networks = true, n
	fi, err = os.Stat(src.Path)
	if err != nil {
		return res, fmt.Errorf("download %s: %w", Redact(src.URL), err)
	}
	now := u.now()
	st = State{URLHash: urlHash(src.URL), ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"),
		Networks: n, Size: fi.Size(), ModTime: fi.ModTime(), Checked: now, Updated: now}
	if err := writeState(src.Path, st); err != nil {
		// The file is in place; without a state the next check asks
		// for the whole file again.
		return res, err
	}
	return res, nil
}

// install unpacks body into a new file beside src.Path, checks it
// against previous (the network count of the file in place, 0 for none)
// and renames it over src.Path. It returns the new file's network count.
func (u *Updater) install(ctx context.Context, src Source, body io.Reader, previous int) (int, error) {
	dir, base := filepath.Split(src.Path)
	if dir == "" {
		dir = "."
	}
	// A directory of its own beside the file, so the new file has the
	// same name (format detection and zone countries go by it) and the
	// rename stays on one file system.
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return 0, fmt.Errorf("directory: %w", err)
	}
	removeLeftovers(dir, base)
	tmpDir, err := os.MkdirTemp(dir, "."+base+".new-")
	if err != nil {
		return 0, fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, base)
	if err := u.write(tmp, body, src); err != nil {
		return 0, err
	}
	n, err := count(ctx, src, tmp)
	if err != nil {
		return 0, fmt.Errorf("the new file does not load: %w", err)
	}
	if err := check(src, n, previous); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, src.Path); err != nil {
		return 0, fmt.Errorf("put in place: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return 0, err
	}
	return n, nil
}

// removeLeftovers removes what an update of base that was cut short (a
// crash, a power cut) left in dir.
func removeLeftovers(dir, base string) {
	for _, pattern := range []string{"." + base + ".new-*", "." + base + StateSuffix + ".new-*"} {
		names, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, n := range names {
			os.RemoveAll(n)
		}
	}
}

// check refuses a network count that is too small, absolutely or against
// the last good file's.
func check(src Source, n, previous int) error {
	if n < max(src.MinNetworks, 1) {
		return fmt.Errorf("the new file has %d networks, fewer than the %d required (min_networks)", n, max(src.MinNetworks, 1))
	}
	if previous > 0 && src.MaxDrop < 100 {
		floor := float64(previous) * (1 - src.MaxDrop/100)
		if float64(n) < floor {
			drop := 100 * float64(previous-n) / float64(previous)
			return fmt.Errorf("the new file has %d networks, %.1f%% fewer than the %d of the last good file (max_drop %g%%)", n, drop, previous, src.MaxDrop)
		}
	}
	return nil
}

// count loads the file at path as src says and returns its networks.
func count(ctx context.Context, src Source, path string) (int, error) {
	db, err := geoip.Load(ctx, []geoip.Source{{Path: path, Format: src.Format, Country: src.Country}})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, info := range db.Sources() {
		n += info.Networks
	}
	return n, nil
}

// write unpacks body into a new file at path and syncs it.
func (u *Updater) write(path string, body io.Reader, src Source) error {
	in := newLimitReader(body, u.maxSize, "the download")
	r, err := unpack(in, src, u.maxSize)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("new file: %w", err)
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = r.finish()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("receiving the file: %w", err)
	}
	return nil
}

// unpacked is a database read out of a download; finish checks what
// follows it (a second candidate in an archive).
type unpacked struct {
	io.Reader
	finish func() error
}

// unpack returns the database in the download r: r itself, r gunzipped,
// or the one database member of a tar (or tar.gz) archive. Unpacked bytes
// are bounded by limit.
func unpack(r io.Reader, src Source, limit int64) (unpacked, error) {
	none := func() error { return nil }
	br := bufio.NewReaderSize(r, 4096)
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return unpacked{}, fmt.Errorf("gzip: %w", err)
		}
		br = bufio.NewReaderSize(newLimitReader(zr, limit, "the unpacked file"), 4096)
	}
	if head, _ := br.Peek(512); len(head) == 512 && isTar(head) {
		return fromTar(tar.NewReader(br), src, limit)
	}
	return unpacked{Reader: newLimitReader(br, limit, "the file"), finish: none}, nil
}

// isTar reports whether block is a tar header: the ustar magic, or an old
// header whose checksum is right.
func isTar(block []byte) bool {
	if bytes.HasPrefix(block[257:], []byte("ustar")) {
		return true
	}
	sum := 0
	for i, c := range block {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int(c)
	}
	field := strings.Trim(string(block[148:156]), " \x00")
	var want int
	if _, err := fmt.Sscanf(field, "%o", &want); err != nil {
		return false
	}
	return field != "" && want == sum
}

// memberExts are the names a database member of an archive may end with.
var memberExts = map[geoip.Format][]string{
	geoip.FormatMMDB: {".mmdb"},
	geoip.FormatCSV:  {".csv"},
	geoip.FormatZone: {".zone", ".cidr", ".txt"},
}

// wanted returns the member extensions to look for: the path's own, or
// the format's, or those of MMDB and CSV.
func wanted(src Source) []string {
	if exts, ok := memberExts[src.Format]; ok {
		return exts
	}
	switch ext := strings.ToLower(filepath.Ext(src.Path)); ext {
	case ".mmdb", ".csv", ".zone", ".cidr":
		return []string{ext}
	}
	return []string{".mmdb", ".csv"}
}

// fromTar returns the one regular member of tr whose name ends in a wanted
// extension; finish refuses a second one.
func fromTar(tr *tar.Reader, src Source, limit int64) (unpacked, error) {
	exts := wanted(src)
	isDB := func(h *tar.Header) bool {
		if h.Typeflag != tar.TypeReg {
			return false
		}
		name := strings.ToLower(h.Name)
		for _, e := range exts {
			if strings.HasSuffix(name, e) {
				return true
			}
		}
		return false
	}
	var seen []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return unpacked{}, fmt.Errorf("the archive has no %s member (it has %s)", strings.Join(exts, " or "), orNone(seen))
		}
		if err != nil {
			return unpacked{}, fmt.Errorf("tar: %w", err)
		}
		if len(seen) < 20 {
			seen = append(seen, h.Name)
		}
		if !isDB(h) {
			continue
		}
		if h.Size > limit {
			return unpacked{}, fmt.Errorf("archive member %s has %d bytes, more than the %d allowed", h.Name, h.Size, limit)
		}
		first := h.Name
		return unpacked{Reader: tr, finish: func() error {
			for {
				h, err := tr.Next()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("tar: %w", err)
				}
				if isDB(h) {
					return fmt.Errorf("the archive has two databases, %s and %s: cannot tell which one is meant", first, h.Name)
				}
			}
		}}, nil
	}
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "no members"
	}
	return strings.Join(names, ", ")
}

// limitReader fails once more than limit bytes were read.
type limitReader struct {
	r           io.Reader
	left, limit int64
	what        string
}

func newLimitReader(r io.Reader, limit int64, what string) *limitReader {
	return &limitReader{r: r, left: limit, limit: limit, what: what}
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, fmt.Errorf("%s is larger than %d bytes", l.what, l.limit)
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, fmt.Errorf("%s is larger than %d bytes", l.what, l.limit)
	}
	return n, err
}

// writeState writes st beside the database at path, replacing the old
// state in one step.
func writeState(path string, st State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("download state: %w", err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+StateSuffix+".new-*")
	if err != nil {
		return fmt.Errorf("download state: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path+StateSuffix)
	}
	if err != nil {
		return fmt.Errorf("download state: %w", err)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
