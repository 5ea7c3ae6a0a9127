// Package sysmon keeps the Go runtime's system monitor (sysmon) of a
// brickd from deep sleep, which is only possible from the environment the
// process starts with: Steady re-executes the daemon with one GODEBUG
// setting added.
//
// Why: sysmon sleeps on a note while every P of the process is idle and is
// woken by the first thread that enters or leaves a system call after
// that; it then polls every 20µs for at least a millisecond before it
// backs off. A brick is idle between the ops of a request/response
// workload (a create, an fsync: a millisecond or less apart) and makes
// system calls as soon as the next op arrives, so its sysmon was woken
// for every op and polled through it: on a 2-CPU VM, 40 % of a brickd's
// context switches and its busiest thread (docs/benchmarks.md, session
// 11). The runtime does not deep-sleep sysmon while GODEBUG schedtrace is
// set; with schedtrace=2147483647 (milliseconds, 24.8 days) sysmon backs
// off to its 10 ms ceiling when nothing happens, and prints a scheduler
// summary line to stderr only when the host has been up that long, then
// once every 24.8 days (and on a fatal error, with the crash report).
//
// Mount processes are not given the setting (Strip): with their single P
// the monitor's wake-ups are what hands the P on while a FUSE reader is
// blocked, and a steady sysmon measured slower there.
package sysmon

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Setting is the GODEBUG entry that keeps sysmon from deep sleep.
const Setting = "schedtrace=2147483647"

// marker is set in the environment of the re-executed daemon, so that a
// GODEBUG the runtime ignores (or a setting removed by a wrapper) cannot
// make it re-execute forever.
const marker = "BRICK_SYSMON_REEXEC"

// Steady reports whether godebug (a GODEBUG value) already sets
// schedtrace, ours or the operator's own, either of which keeps sysmon
// from deep sleep.
func Steady(godebug string) bool {
	for _, kv := range strings.Split(godebug, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok && k == "schedtrace" && v != "" && v != "0" {
			return true
		}
	}
	return false
}

// With returns env (as os.Environ gives it) with Setting added to its
// GODEBUG, keeping the other GODEBUG settings, and the re-execution marker.
func With(env []string) []string {
	out := make([]string, 0, len(env)+2)
	godebug := Setting
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			if v != "" {
				godebug = v + "," + Setting
			}
			continue
		}
		if strings.HasPrefix(kv, marker+"=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "GODEBUG="+godebug, marker+"=1")
}

// Strip returns env without what With added: the marker and, in GODEBUG,
// exactly Setting (an operator's own schedtrace is passed on). A GODEBUG
// left empty is dropped.
func Strip(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if strings.HasPrefix(kv, marker+"=") {
			continue
		}
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			var keep []string
			for _, s := range strings.Split(v, ",") {
				if s != Setting && s != "" {
					keep = append(keep, s)
				}
			}
			if len(keep) == 0 {
				continue
			}
			kv = "GODEBUG=" + strings.Join(keep, ",")
		}
		out = append(out, kv)
	}
	return out
}

// Reexec replaces the running program with itself, the same arguments and
// env with Setting added (With), unless GODEBUG already keeps sysmon
// steady or this process is already the re-executed one. It returns nil
// without doing anything in those cases and an error when the exec
// failed; on success it does not return.
func Reexec(args, env []string) error {
	if Steady(lookup(env, "GODEBUG")) || lookup(env, marker) != "" {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("re-executing with GODEBUG=%s: finding this program: %w", Setting, err)
	}
	if err := syscall.Exec(exe, args, With(env)); err != nil {
		return fmt.Errorf("re-executing %s with GODEBUG=%s: %w", exe, Setting, err)
	}
	return nil
}

// lookup returns the value of key in env ("" if absent); the first one
// wins, as in the runtime's own lookup.
func lookup(env []string, key string) string {
	for _, kv := range env {
		if s, ok := strings.CutPrefix(kv, key+"="); ok {
			return s
		}
	}
	return ""
}
