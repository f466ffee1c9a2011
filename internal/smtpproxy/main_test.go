package smtpproxy

import (
	"testing"

	"github.com/postern/postern/internal/testenv"
)

// TestMain stops the real mail servers that the end-to-end tests of this
// package start (POSTERN_E2E=1). Started with replyPeerEnv set, the test
// binary is instead a tiny SMTP server for one connection (replypeer_test.go).
func TestMain(m *testing.M) {
	testenv.ServePeer(replyPeerEnv, runReplyPeer)
	testenv.Main(m)
}
