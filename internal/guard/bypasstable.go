package guard

// BypassRow says which triggers one bypass condition can bypass. A
// condition known only later in a session cannot bypass a trigger that
// fires earlier: a sender known at MAIL FROM cannot undo a failed login.
type BypassRow struct {
	Condition string
	Known     string // when the condition becomes known
	Triggers  string // reason codes it can bypass
}

// BypassTable lists every bypass condition of a bypass.List and the triggers it can bypass,
// for `postern check`.
func BypassTable() []BypassRow {
	return []BypassRow{
		{"i: address, a: host name", "at connect", "I L P Y R S D M A C"},
		{"w: DNS whitelist zone", "after the DNS lookup at connect", "L P Y R S D M A C"},
		{"t: trusted session (authenticated, or a trusted upstream)", "after AUTH", "P Y S M A C"},
		{"s: sender, l: local sender", "after MAIL FROM", "P Y R S M A C"},
		{"r: recipient", "at RCPT TO (that recipient; then the message)", "P Y S M A C"},
	}
}
