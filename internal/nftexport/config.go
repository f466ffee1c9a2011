package nftexport

import "errors"

// Config names the table and sets the exporter writes and whether it may
// create them.
type Config struct {
	Family string // "inet" (default), "ip" or "ip6"
	Table  string
	Set4   string // the set of IPv4 ranges (type ipv4_addr)
	Set6   string // the set of IPv6 ranges (type ipv6_addr)
	// Create makes the table and sets when they are missing; Chain, when
	// also set, is a chain of the table, hooked on input, that postern
	// owns and fills with rules dropping the sets' source addresses.
	Create bool
	Chain  string
}

// ErrPermission is returned (wrapped) when the kernel refuses netlink: the
// process lacks CAP_NET_ADMIN.
var ErrPermission = errors.New("the kernel refused netlink: postern needs CAP_NET_ADMIN for the nftables export (keep it with systemd's AmbientCapabilities=CAP_NET_ADMIN, see docs/exports/nftables.md)")
