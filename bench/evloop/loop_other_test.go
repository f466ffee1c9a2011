//go:build !linux

package main

import "testing"

func startLoop(t *testing.T, _ service, _ bool) string {
	t.Skip("the event loop needs Linux")
	return ""
}
