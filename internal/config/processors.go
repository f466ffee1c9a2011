package config

import (
	"fmt"
	"strconv"
	"strings"
)

// maxProcessors bounds a fixed processors setting.
const maxProcessors = 1024

// ProcessorsSetting reads processors: adaptive (the default) sizes the
// Go runtime's processors to the load, up to all of them; all keeps all
// of them; a number n keeps n. It returns adaptive, or the fixed number
// (0 for all).
func (c *File) ProcessorsSetting() (adaptive bool, fixed int, err error) {
	v := strings.ToLower(strings.TrimSpace(c.Processors.Value))
	switch v {
	case "", "adaptive":
		return true, 0, nil
	case "all":
		return false, 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxProcessors {
		return false, 0, fmt.Errorf("bad processors %q: want adaptive, all, or a number from 1 to %d", c.Processors.Value, maxProcessors)
	}
	return false, n, nil
}
