package e2e

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/postern/postern/internal/testenv"
)

// suite is what the subtests of TestSMTP share: the backends, rspamd, the
// DNSBL server and one postern in front of Postfix.
type suite struct {
	env    *testenv.Env
	gw     *gateway
	dns    *dnsServer
	rspamd string
}

// dnsListed is the one address on the test's DNSBL.
const dnsListed = "203.0.113.66"

// TestSMTP runs postern's SMTP gateway (smtp with STARTTLS, submission with
// AUTH required, smtps) in front of the real Postfix and Dovecot, with a
// real rspamd and a DNSBL, and drives it with real clients. Every subtest
// uses client addresses of its own (the PROXY header's source), so they
// run in parallel against the one gateway; the addresses are listed in
// README.md.
func TestSMTP(t *testing.T) {
	env := testenv.Backends(t)
	posternBinary(t)
	s := &suite{env: env}
	s.rspamd = startRspamd(t)
	s.dns = startDNS(t, dnsListed)
	s.gw = startGateway(t, gwConfig{Backend: env.SMTPProxy, Rspamd: s.rspamd, DNS: s.dns.Addr})

	for _, tc := range []struct {
		name string
		f    func(*testing.T, *suite)
	}{
		// Intrusion prevention, every trigger at its threshold.
		{"Trigger_I_ConnectionsPerMinute", testTriggerI},
		{"Trigger_L_FailedLogins", testTriggerL},
		{"Trigger_P_UnknownRecipients", testTriggerP},
		{"Trigger_Y_RelayDenials_IPv6", testTriggerY},
		{"Trigger_R_Rset", testTriggerR},
		{"Trigger_S_SpamScore", testTriggerS},
		{"Trigger_S_SpamScore_BDAT", testTriggerSBDAT},
		{"Trigger_D_DNSBL", testTriggerD},
		{"Trigger_M_MessageSize", testTriggerM},
		{"Trigger_M_MessageSize_BDAT", testTriggerMBDAT},
		{"Trigger_A_TarpitAccount", testTriggerA},
		{"Trigger_C_ContentRule", testTriggerC},
		{"Trigger_C_ContentRule_BDAT", testTriggerCBDAT},
		// Login restrictions.
		{"LoginRestriction", testLoginRestriction},
		{"LoginRestriction_FirstRefusalLooksLikeWrongPassword", testLoginRestrictionFirst},
		// Legitimate mail, byte-identical to direct delivery.
		{"Deliver_Plain", testDeliverPlain},
		{"Deliver_Large", testDeliverLarge},
		{"Deliver_STARTTLS", testDeliverSTARTTLS},
		{"Deliver_ImplicitTLS", testDeliverImplicitTLS},
		{"Deliver_Submission_AuthPlain", testDeliverAuthPlain},
		{"Deliver_Submission_AuthLogin", testDeliverAuthLogin},
		{"Deliver_Pipelined", testDeliverPipelined},
		{"Deliver_8BITMIME", testDeliver8BITMIME},
		{"Deliver_UTF8", testDeliverUTF8},
		{"Deliver_DSN", testDeliverDSN},
		{"Deliver_BDAT", testDeliverBDAT},
		// The message log line and postern status against the real chain.
		{"Status_MessageLog", testStatusAndMessageLog},
		// Bad input against the real chain.
		{"Bad_LongCommandLine", testBadLongLine},
		{"Bad_BareLF", testBadBareLF},
		{"Bad_BareLF_PipelinedSmuggling", testBadSmuggling},
		{"Bad_BinaryGarbage", testBadGarbage},
		{"Bad_UnfinishedDATA", testBadUnfinishedData},
		{"Bad_STARTTLSInjection", testBadSTARTTLSInjection},
		{"Bad_CommandSmuggling", testSmuggling},
		{"Bad_SilentClients", testSilentClients},
		// Backend failures (gateways of their own, scripted backends).
		{"Backend_Faults", testBackendFaults},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, s)
		})
	}
}

// refused checks that a blocked address's next connection is refused by
// postern with 554 5.7.1 naming the reason, and that Postfix never hears
// of it (postern refuses before it connects to the backend).
func (s *suite) refused(t *testing.T, addr, service, reasonName string) {
	t.Helper()
	mark := s.env.LogMark(t, "postfix")
	target := map[string]string{"smtp": s.gw.SMTP, "submission": s.gw.Submission, "smtps": s.gw.SMTPS}[service]
	r := python(t, target, netip.AddrPortFrom(netip.MustParseAddr(addr), 41999), service == "smtps")
	if got := r.reply(0); got.Code != 554 || got.Msg != "5.7.1 Blocked ("+reasonName+")" {
		t.Fatalf("connection of the blocked %s: %v, want 554 5.7.1 Blocked (%s)", addr, r, reasonName)
	}
	if l := linesWith(postfixSince(t, s.env, mark), client(addr)); len(l) > 0 {
		t.Fatalf("Postfix saw the refused connection of %s:\n%s", addr, strings.Join(l, "\n"))
	}
}
