package snapshot

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Files lists every file a snapshot was read from: the configuration, the
// GeoIP databases, pattern includes (nested ones and those of grant
// lists too) and the bypass file with its f: includes.
func TestFilesListsEveryFileRead(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"sg.zone":          "203.0.113.0/24\n",
		"office.txt":       "198.51.100.0/24\n{nested.txt}\n",
		"nested.txt":       "192.0.2.0/28\n",
		"admins.txt":       "192.0.2.99\n",
		"bypass.txt":       "192.0.2.1\nf:bypass-more.txt\n",
		"bypass-more.txt":  "# nothing yet\n",
		"not-included.txt": "192.0.2.2\n",
	} {
		write(t, filepath.Join(dir, name), body)
	}
	cfg := filepath.Join(dir, "postern.yaml")
	write(t, cfg, `geoip:
  databases:
    - path: sg.zone
patterns:
  Office: "{office.txt}"
  SG: "country:SG"
services:
  imap: { listen: ":143", backend: "b:1", grant: "[Office];[SG];{admins.txt}" }
intrusion_prevention:
  bypass_file: bypass.txt
`)
	s, err := Load(context.Background(), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range []string{"postern.yaml", "sg.zone", "office.txt", "nested.txt", "admins.txt", "bypass.txt", "bypass-more.txt"} {
		want = append(want, filepath.Join(dir, n))
	}
	if got := s.Files(); !slices.Equal(got, want) {
		t.Errorf("Files:\n got %v\nwant %v", got, want)
	}
}

// A database with a url whose file is not there yet is named with its
// url (password hidden), not as an unreadable file.
func TestDownloadedDatabaseNotYetThere(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	write(t, cfg, `geoip:
  databases:
    - path: country.mmdb
      url: "https://acct:secret@example.com/db"
`)
	_, err := Load(context.Background(), cfg, time.Now())
	want := cfg + `:4:12: geoip database ` + filepath.Join(dir, "country.mmdb") + ` is not downloaded yet from https://acct:xxxxx@example.com/db`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v\nwant %s", err, want)
	}
	if _, statErr := os.Stat(filepath.Join(dir, "country.mmdb")); statErr == nil {
		t.Error("building a snapshot downloaded the file")
	}
}
