package smtpproxy

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"time"
)

// replyPeerEnv starts the test binary as an SMTP server in a process of
// its own: it greets, and answers every line after the delay the variable
// gives (the time a mail server takes) — "221" to QUIT, "250" to anything
// else. In another process, so that its system calls are not this one's.
const replyPeerEnv = "SMTPPROXY_TEST_REPLY_PEER"

func runReplyPeer(delay string) int {
	d, err := time.ParseDuration(delay)
	if err != nil {
		return 2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 2
	}
	fmt.Println(ln.Addr())
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(60 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		return 2
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write([]byte("220 peer ESMTP\r\n")); err != nil {
		return 0
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0
		}
		time.Sleep(d)
		answer := "250 2.0.0 Ok\r\n"
		if strings.HasPrefix(line, "QUIT") {
			answer = "221 2.0.0 Bye\r\n"
		}
		if _, err := c.Write([]byte(answer)); err != nil || answer[0] == '2' && answer[1] == '2' {
			return 0
		}
	}
}
