//go:build !unix

package netlisten

import "net"

// socketUnread cannot peek without MSG_PEEK: it reports false.
func socketUnread(net.Conn) bool { return false }
