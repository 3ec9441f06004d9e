//go:build !linux

package proto

// fionread is the BSDs' (and macOS's) FIONREAD, _IOR('f', 127, int),
// which golang.org/x/sys/unix does not define there.
const fionread = 0x4004667f
