package smtpproxy

import (
	"testing"

	"github.com/postern/postern/internal/testenv"
)

// TestMain stops the real mail servers that the end-to-end tests of this
// package start (POSTERN_E2E=1).
func TestMain(m *testing.M) { testenv.Main(m) }
