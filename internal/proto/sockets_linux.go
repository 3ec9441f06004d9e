package proto

import "golang.org/x/sys/unix"

// fionread asks how many bytes wait in a socket's receive queue.
const fionread = unix.SIOCINQ

// recvmsgFlags makes the kernel mark received descriptors close-on-exec
// as it installs them, as package net's ReadMsgUnix does: a fork between
// the receive and a later CloseOnExec (the master spawning while draining
// workers hand their connections over) would otherwise inherit them.
const recvmsgFlags = unix.MSG_CMSG_CLOEXEC
