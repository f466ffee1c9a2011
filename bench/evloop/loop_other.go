//go:build !linux

package main

import (
	"context"
	"errors"
)

// runLoops needs epoll: only Linux has the event loop.
func runLoops(context.Context, []service, int, bool) error {
	return errors.New("-mode loop needs Linux (epoll); use -mode goroutine")
}

// runOwn needs epoll too.
func runOwn(context.Context, []service) error {
	return errors.New("-mode goroutine-own needs Linux (epoll); use -mode goroutine")
}

// setCosts: the costs are the loop's, which needs Linux.
func setCosts(list string) error {
	if list != "" {
		return errors.New("-costs needs Linux (the event loop)")
	}
	return nil
}

func costTimers(context.Context) {}

func startLoginChecks(context.Context, string, bool, bool, bool) error {
	return errors.New("-login: Linux only")
}
