package geoip

// countryCodes lists every code ValidCountryCode accepts, sorted, each code
// followed by exactly one separator (space or newline) so that code i is
// countryCodes[3*i : 3*i+2]. The index of a code in this list is its label
// inside a table, which lets CountryPrefixes and Country turn labels back
// into strings without allocating.
//
// The list holds the 249 officially assigned ISO 3166-1 alpha-2 codes plus
// five codes that are not assigned but that IP datasets use:
//
//   - AN: Netherlands Antilles, transitionally reserved since 2010; still in
//     RIR data (ip-location-db has it in IPv6).
//   - AP: "Asia/Pacific region", used by RIR statistics and older MaxMind
//     databases for APNIC space without a country.
//   - EU: "European Union", exceptionally reserved; RIPE allocations use it.
//   - XK: Kosovo, user-assigned; used by the EU, RIRs and every GeoIP vendor.
//   - ZZ: "unknown or unspecified", user-assigned; DB-IP and others use it
//     for reserved and unallocated space. Accepting it lets such datasets
//     load; `country:ZZ` then matches exactly what the dataset calls unknown.
const countryCodes = `AD AE AF AG AI AL AM AN AO AP AQ AR AS AT AU AW AX AZ
BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ
DE DJ DK DM DO DZ
EC EE EG EH ER ES ET EU
FI FJ FK FM FO FR
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY
HK HM HN HR HT HU
ID IE IL IM IN IO IQ IR IS IT
JE JM JO JP
KE KG KH KI KM KN KP KR KW KY KZ
LA LB LC LI LK LR LS LT LU LV LY
MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ
NA NC NE NF NG NI NL NO NP NR NU NZ
OM
PA PE PF PG PH PK PL PM PN PR PS PT PW PY
QA
RE RO RS RU RW
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ
TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ
UA UG UM US UY UZ
VA VC VE VG VI VN VU
WF WS
XK
YE YT
ZA ZM ZW ZZ
`

// numCountryCodes is the number of codes in countryCodes.
const numCountryCodes = len(countryCodes) / 3

// ValidCountryCode reports whether cc is a country code that datasets and
// patterns may use: an assigned ISO 3166-1 alpha-2 code or one of AN, AP,
// EU, XK and ZZ (see the package documentation). The check is
// case-sensitive; only upper-case codes are valid.
func ValidCountryCode(cc string) bool {
	_, ok := countryLabel(cc)
	return ok
}

// countryLabel returns the index of cc in countryCodes.
func countryLabel(cc string) (uint32, bool) {
	if len(cc) != 2 {
		return 0, false
	}
	lo, hi := 0, numCountryCodes
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		c := countryCodes[3*mid : 3*mid+2]
		switch {
		case c == cc:
			return uint32(mid), true
		case c < cc:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return 0, false
}

// countryCode returns the code whose label is l. It returns "" for a label
// that countryLabel never returns.
func countryCode(l uint32) string {
	if l >= uint32(numCountryCodes) {
		return ""
	}
	return countryCodes[3*l : 3*l+2]
}

// dataCountryLabel validates a country code found in data, accepting lower
// case, without allocating in the common case.
func dataCountryLabel(b []byte) (uint32, bool) {
	if len(b) != 2 || !isASCIILetter(b[0]) || !isASCIILetter(b[1]) {
		return 0, false
	}
	var up [2]byte
	up[0], up[1] = b[0]&^0x20, b[1]&^0x20
	return countryLabel(string(up[:]))
}

func isASCIILetter(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
