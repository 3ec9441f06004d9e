package proto

import "golang.org/x/sys/unix"

// fionread asks how many bytes wait in a socket's receive queue.
const fionread = unix.SIOCINQ
