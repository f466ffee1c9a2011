package demo

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// Gateway describes a running demo gateway: where each service listens
// (a zero address: not served), the configuration file and how to run
// postern from a shell.
type Gateway struct {
	SMTP, Submission, IMAP, POP3 netip.AddrPort
	Web                          string // base URL; "" when not served
	Config                       string // the configuration file
	Postern                      string // e.g. "go run ./cmd/postern"
}

// Step is one thing to try.
type Step struct {
	Title   string
	Command string   // one bash command line
	Postern []string // for a postern command, its arguments (Command runs Gateway.Postern with them); nil otherwise
	Expect  string   // what the command shows
}

// Steps returns the commands to try against g, in order: send mail,
// read it, use the webmail, see access rules refuse, guess passwords until
// postern blocks, list and remove the block.
func Steps(g Gateway) []Step {
	alice, bob := Users()[0], Users()[1]
	var s []Step
	add := func(title, cmd, expect string) { s = append(s, Step{Title: title, Command: cmd, Expect: expect}) }
	postern := func(title, expect string, args ...string) {
		words := make([]string, len(args))
		for i, a := range args {
			words[i] = quote(a)
		}
		s = append(s, Step{Title: title, Command: g.Postern + " " + strings.Join(words, " "), Postern: args, Expect: expect})
	}
	iface := func(a netip.Addr) string { return " --interface " + a.String() }
	if g.SMTP.IsValid() {
		add("Send a message to "+alice.Name+" through the SMTP gateway (port 25's job)",
			fmt.Sprintf("swaks --server %s --from carol@example.org --to %s --header 'Subject: Hello through postern' --body 'Relayed by postern.'", g.SMTP, alice.Name),
			`the dialogue ends with "250 2.0.0 OK: queued" from the backend, relayed by postern`)
		add("No swaks? curl sends mail too",
			fmt.Sprintf(`printf 'Subject: Hello again\r\n\r\nSent with curl.\r\n' | curl -sS smtp://%s --mail-from carol@example.org --mail-rcpt %s -T -`, g.SMTP, alice.Name),
			"no output: curl exits 0")
	}
	if g.Submission.IsValid() {
		add("Send as "+alice.Name+" through submission, with AUTH PLAIN",
			fmt.Sprintf("swaks --server %s --auth PLAIN --auth-user %s --auth-password %s --from %s --to %s --header 'Subject: Hi Bob'",
				g.Submission, alice.Name, alice.Password, alice.Name, bob.Name),
			`"235 2.0.0 Authentication succeeded", then "250 2.0.0 OK: queued"`)
	}
	if g.IMAP.IsValid() {
		add("Read that message over IMAP",
			fmt.Sprintf("curl -sS -u %s:%s 'imap://%s/INBOX;UID=2'", alice.Name, alice.Password, g.IMAP),
			"the message; the backend's Received: line names 127.0.0.1, the client address postern passed on in its PROXY header")
	}
	if g.POP3.IsValid() {
		add("And over POP3",
			fmt.Sprintf("curl -sS -u %s:%s pop3://%s/2", alice.Name, alice.Password, g.POP3),
			"the same message")
	}
	if g.Web != "" {
		add("Log in to the webmail",
			fmt.Sprintf("curl -sS -i -d %s=%s -d %s=%s %s%s", UserField, alice.Name, PasswordField, alice.Password, g.Web, LoginPath),
			`"302 Found" with "Location: /inbox"`)
		add("Open /admin: you ("+You.String()+") are in the Admins pattern",
			fmt.Sprintf(`curl -sS -o /dev/null -w '%%{http_code}\n' %s/admin`, g.Web),
			"200")
		add("A colleague ("+Colleague.String()+") is not: postern answers 403 and the webmail never sees the request",
			fmt.Sprintf(`curl -sS -o /dev/null -w '%%{http_code}\n'%s %s/admin`, iface(Colleague), g.Web),
			"403")
	}
	if g.IMAP.IsValid() {
		add("A client outside the granted country ("+Abroad.String()+") is refused at connect",
			fmt.Sprintf("curl -sS%s -u %s:%s imap://%s/", iface(Abroad), alice.Name, alice.Password, g.IMAP),
			`"curl: (8) Got unexpected imap-server response": postern answered "* BYE" at connect, before any password`)
		postern("Ask postern why", "deny, with the rule and the GeoIP data behind it (exit status 1)",
			"explain", "-c", g.Config, "--ip", Abroad.String(), "--service", "imap")
		add(bob.Name+" may log in only from Admins: from "+Colleague.String()+" his right password fails",
			fmt.Sprintf("curl -sS%s -u %s:%s imap://%s/", iface(Colleague), bob.Name, bob.Password, g.IMAP),
			`"curl: (67) Login denied", exactly like a wrong password`)
		add(fmt.Sprintf("Guess passwords from %s until postern blocks it", Guesser),
			fmt.Sprintf(`for i in 1 2 3 4; do curl -sS%s -u "%s:guess-$i" imap://%s/; done`, iface(Guesser), alice.Name, g.IMAP),
			fmt.Sprintf(`"curl: (67) Login denied" %d times — the %s wrong password blocked %s (failed_logins: %d) — then "curl: (8) …": refused at connect`,
				FailedLogins, ordinal(FailedLogins), Guesser, FailedLogins))
	}
	postern("See the block", fmt.Sprintf("%s, reason L (failed logins), service imap, the account tried", Guesser),
		"blocks", "list", "-c", g.Config)
	postern("Lift it", "removed; the address may connect again",
		"blocks", "remove", "-c", g.Config, Guesser.String())
	return s
}

// ordinal returns "1st", "2nd", "3rd", "4th", …
func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return fmt.Sprintf("%d%s", n, suffix)
}

// Print writes the demo's welcome: where everything is, who the users
// are and the steps to try.
func Print(w io.Writer, g Gateway, dir string) {
	users := Users()
	fmt.Fprintf(w, "\npostern demo is running: a gateway on loopback in front of in-process SMTP, IMAP, POP3 and webmail backends.\n\n")
	fmt.Fprintf(w, "  services   ")
	for _, sv := range []struct {
		name string
		ap   netip.AddrPort
	}{{"smtp", g.SMTP}, {"submission", g.Submission}, {"imap", g.IMAP}, {"pop3", g.POP3}} {
		if sv.ap.IsValid() {
			fmt.Fprintf(w, "%s %s   ", sv.name, sv.ap)
		}
	}
	if g.Web != "" {
		fmt.Fprintf(w, "web %s", g.Web)
	}
	fmt.Fprintf(w, "\n  users      %s / %s, %s / %s\n", users[0].Name, users[0].Password, users[1].Name, users[1].Password)
	fmt.Fprintf(w, "  config     %s  (state, block store and admin socket under %s)\n", g.Config, dir)
	fmt.Fprintf(w, "  clients    %s is you (in Admins), %s a colleague, %s guesses passwords, %s is abroad —\n", You, Colleague, Guesser, Abroad)
	fmt.Fprintf(w, "             every 127.x address is this machine; curl --interface picks one.\n")
	fmt.Fprintf(w, "\nTry these in another terminal, from the repository (swaks and curl: apt-get install swaks curl):\n")
	for i, st := range Steps(g) {
		fmt.Fprintf(w, "\n# %d. %s\n%s\n#    → %s\n", i+1, st.Title, st.Command, st.Expect)
	}
	fmt.Fprintf(w, "\nThe gateway's log follows below: one line per decision. Ctrl-C stops the demo.\n\n")
}
