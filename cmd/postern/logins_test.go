package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// `postern explain --account` resolves the name as the backend does: bob,
// BOB and BOB@Example.Test all meet the restriction for bob@example.test
// with logins.default_domain set, and the output says which account the
// name logs in as.
func TestExplainAccountResolvedAsTheBackend(t *testing.T) {
	dir := scenarioDir(t)
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, `patterns:
  Office: "203.0.113.0/24"
services:
  imap: { listen: ":143", backend: "127.0.0.1:10143" }
login_restrictions:
  - "bob@example.test=[Office]"
logins: { default_domain: example.test }
`)
	for _, name := range []string{"bob", "BOB", "BOB@Example.Test", "bob@example.test"} {
		code, out, errs := postern(t, "explain", "-c", cfg, "--ip", "8.8.8.8", "--service", "imap", "--account", name)
		if code != 1 || !strings.Contains(out, "login bob@example.test") || !strings.Contains(out, "refuses") {
			t.Errorf("explain --account %s from elsewhere: exit %d\n%s%s", name, code, out, errs)
		}
		if name != "bob@example.test" && !strings.Contains(out, "("+name+" logs in as bob@example.test)") {
			t.Errorf("explain --account %s does not say which account it is:\n%s", name, out)
		}
		code, out, errs = postern(t, "explain", "-c", cfg, "--ip", "203.0.113.5", "--service", "imap", "--account", name)
		if code != 0 || !strings.Contains(out, "decision  allow") {
			t.Errorf("explain --account %s from the office: exit %d\n%s%s", name, code, out, errs)
		}
	}
	code, out, _ := postern(t, "explain", "-c", cfg, "--ip", "8.8.8.8", "--service", "imap", "--account", "bob@other.example")
	if code != 0 || !strings.Contains(out, "no login restriction applies") {
		t.Errorf("another domain's bob is another account: exit %d\n%s", code, out)
	}
}
