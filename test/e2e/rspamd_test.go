package e2e

import (
	"testing"

	"github.com/postern/postern/internal/spamscan/rspamdtest"
)

// rspamdLua is LOCAL_CONFDIR/rspamd.local.lua: a message with the header
// "X-E2E-Spam-Score: N" gets a total score of exactly N (never above it:
// the last bit of floating-point rounding is taken off if need be), so the
// S trigger can be tested at its threshold.
const rspamdLua = `-- postern e2e: "X-E2E-Spam-Score: N" makes the total score N.
local sym = 'POSTERN_E2E_SCORE'
rspamd_config:register_symbol({
  name = sym,
  type = 'postfilter',
  priority = 10,
  callback = function(task)
    local want = tonumber(task:get_header('X-E2E-Spam-Score') or '')
    if not want then return end
    local cur = task:get_metric_score('default')[1]
    local w = want - cur
    while cur + w > want do w = w - 1e-12 end
    task:insert_result(sym, w)
  end,
})
rspamd_config:set_metric_symbol({ name = sym, score = 1.0, group = 'postern_e2e',
  description = 'postern e2e: exact total score' })
`

// startRspamd starts the tests' rspamd (rspamdtest) with the rule above
// and returns its base URL.
func startRspamd(t *testing.T) string {
	t.Helper()
	return rspamdtest.Start(t, map[string]string{"rspamd.local.lua": rspamdLua})
}
