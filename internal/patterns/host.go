package patterns

import "strings"

// hostSet matches client names against host masks. Exact names and the
// common *.domain form are map lookups; other masks are globbed.
type hostSet struct {
	exact    map[string]struct{}
	suffixes map[string]struct{} // *.domain: ".domain"
	globs    []string
}

func (h *hostSet) add(mask string) {
	wild := strings.ContainsAny(mask, "*?")
	switch {
	case !wild:
		if h.exact == nil {
			h.exact = make(map[string]struct{})
		}
		h.exact[mask] = struct{}{}
	case strings.HasPrefix(mask, "*.") && !strings.ContainsAny(mask[2:], "*?"):
		if h.suffixes == nil {
			h.suffixes = make(map[string]struct{})
		}
		h.suffixes[mask[1:]] = struct{}{}
	default:
		h.globs = append(h.globs, mask)
	}
}

func (h *hostSet) empty() bool {
	return len(h.exact) == 0 && len(h.suffixes) == 0 && len(h.globs) == 0
}

// match reports whether the normalized name matches any mask. '*' matches
// any run of characters, dots included, so *.example.com matches
// a.b.example.com but not example.com itself.
func (h *hostSet) match(name string) bool {
	if name == "" {
		return false
	}
	if _, ok := h.exact[name]; ok {
		return true
	}
	if len(h.suffixes) > 0 {
		// Every suffix that starts at a dot: "a.b.example.com" tries
		// ".b.example.com", ".example.com" and ".com".
		for i := 0; i < len(name); i++ {
			if name[i] == '.' {
				if _, ok := h.suffixes[name[i:]]; ok {
					return true
				}
			}
		}
	}
	for _, g := range h.globs {
		if globMatch(g, name) {
			return true
		}
	}
	return false
}

// normalizeHost lower-cases a DNS name and drops its trailing dot.
func normalizeHost(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}
