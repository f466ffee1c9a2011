package gateway

// sharePasses shares the travel passes with the other gateways in cluster
// mode: passes added or removed here are announced, the others' are
// applied (when valid under this gateway's policy) and stored, and the
// cluster's passes in force are loaded at start.
func (g *Gateway) sharePasses() {
	if g.cluster == nil || g.passes == nil {
		return
	}
	g.passShare = g.cluster.Passes(g.passes)
	g.passes.SetPublisher(g.passShare)
	g.passShare.Start()
}

// closePassShare stops pass sharing (before the cluster link closes).
func (g *Gateway) closePassShare() {
	if g.passShare != nil {
		g.passes.SetPublisher(nil)
		g.passShare.Close()
		g.passShare = nil
	}
}
