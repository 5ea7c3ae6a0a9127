package mounter

import "syscall"

func errno(e uint32) error { return syscall.Errno(e) }
