package smtpproxy

import (
	"bufio"
	"net"
	"strings"
	"time"
)

// replyPeerEnv starts the test binary as an SMTP server in a process of
// its own: it greets, and answers every line after the delay the variable
// gives (the time a mail server takes) — "221" to QUIT, "250" to anything
// else. In another process, so that its system calls are not this one's.
const replyPeerEnv = "SMTPPROXY_TEST_REPLY_PEER"

// runReplyPeer is the peer's SMTP server.
func runReplyPeer(c net.Conn, delay string) {
	d, err := time.ParseDuration(delay)
	if err != nil {
		return
	}
	if _, err := c.Write([]byte("220 peer ESMTP\r\n")); err != nil {
		return
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		time.Sleep(d)
		answer := "250 2.0.0 Ok\r\n"
		if strings.HasPrefix(line, "QUIT") {
			answer = "221 2.0.0 Bye\r\n"
		}
		if _, err := c.Write([]byte(answer)); err != nil || strings.HasPrefix(answer, "221") {
			return
		}
	}
}
