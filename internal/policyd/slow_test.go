package policyd

import (
	"net/netip"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/service"
)

// slowEngine is an engine whose gate takes delay.
type slowEngine struct {
	*guard.Engine
	delay time.Duration
}

func (e *slowEngine) Admit(a netip.Addr, s service.Service) guard.Verdict {
	time.Sleep(e.delay)
	return e.Engine.Admit(a, s)
}

func (e *slowEngine) AdmitBlocks(a netip.Addr, s service.Service) guard.Verdict {
	time.Sleep(e.delay)
	return e.Engine.AdmitBlocks(a, s)
}
