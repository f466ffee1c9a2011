//go:build !linux

package main

import "testing"

func startLoop(t *testing.T, _ service, _ bool) string {
	t.Skip("the event loop needs Linux")
	return ""
}

func startOwn(t *testing.T, _ service) string {
	t.Skip("the program's own poller needs Linux")
	return ""
}

func startLoopCosts(t *testing.T, _ service) string {
	t.Skip("the event loop needs Linux")
	return ""
}
