package benchkit

import (
	"bytes"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"
)

// BigMessage returns the large message of the FETCH and RETR scenarios,
// of about size bytes, as a Maildir stores it (LF line ends): a few
// headers, then lines of 76 base64 characters, as attachments are sent;
// no line starts with a dot. vsize is its size with CRLF line ends (the
// IMAP literal, the POP3 octet count).
func BigMessage(subject string, size int) (file []byte, vsize int64) {
	head := "From: Bob <bob@example.test>\nTo: Bob <bob@example.test>\nSubject: " + subject + "\n" +
		"Date: Thu, 01 Jan 2026 00:00:00 +0000\nMessage-ID: <big.1@bench.invalid>\nMIME-Version: 1.0\n" +
		"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	file = append(make([]byte, 0, size+80), head...)
	for i := 0; len(file) < size; i++ {
		for j := range 76 {
			file = append(file, alphabet[(i*7+j*13)%64])
		}
		file = append(file, '\n')
	}
	return file, int64(len(file) + bytes.Count(file, []byte("\n")))
}

// StoreMaildir replaces the Maildir under home (a mailbox owner's home in
// the harness's mail root) by one that holds only msg, in cur/ and seen,
// owned by owner as Dovecot's own delivery leaves it: the file's name
// carries its size and its size with CRLF line ends (S=, W=) as Dovecot's
// names do, and Dovecot indexes it at the first SELECT. home's parent
// (the domain) is made and given to owner too. It returns the Maildir's
// path.
func StoreMaildir(home string, msg []byte, vsize int64, owner string) (string, error) {
	u, err := user.Lookup(owner)
	if err != nil {
		return "", fmt.Errorf("maildir owner: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return "", fmt.Errorf("maildir owner %s: uid %q", owner, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return "", fmt.Errorf("maildir owner %s: gid %q", owner, u.Gid)
	}
	md := filepath.Join(home, "Maildir")
	if err := os.RemoveAll(md); err != nil {
		return "", err
	}
	for _, d := range []string{filepath.Dir(home), home, md, filepath.Join(md, "cur"), filepath.Join(md, "new"), filepath.Join(md, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", err
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return "", err
		}
	}
	name := fmt.Sprintf("%d.M1P%d.bench,S=%d,W=%d:2,S", time.Now().Unix(), os.Getpid(), len(msg), vsize)
	f := filepath.Join(md, "cur", name)
	if err := os.WriteFile(f, msg, 0o600); err != nil {
		return "", err
	}
	return md, os.Chown(f, uid, gid)
}
