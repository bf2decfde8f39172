//go:build linux || darwin

package sqlite

import (
	"os"
	"syscall"
)

// walHeaderLen is the length of the first copy of the wal-index header at
// the start of the -shm file (https://sqlite.org/walformat.html): among
// others, a counter that every write transaction increments, the last
// valid frame and the salts that change when the WAL restarts.
const walHeaderLen = 48

// shmWatch tells whether the file may have changed since it last looked, by
// comparing the wal-index header in the -shm file, mapped read-only, with
// the copy it took last: a few bytes compared, no system call and no
// statement. It is only a hint: the poller confirms with PRAGMA
// data_version, which is the authority, whenever the header changed, and
// at least every fullCheckEvery anyway.
//
// The mapping must live no longer than a connection of the file that keeps
// the -shm file open: SQLite truncates the file only when no connection has
// it open, and reading a truncated mapping would fault.
type shmWatch struct {
	mem  []byte
	last [walHeaderLen]byte
	seen bool
}

// openShmWatch maps the start of path's -shm file, or returns nil if it
// cannot (then the poller asks PRAGMA data_version every turn).
func openShmWatch(path string) *shmWatch {
	f, err := os.Open(path + "-shm")
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() < walHeaderLen {
		return nil
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, walHeaderLen, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil
	}
	return &shmWatch{mem: mem}
}

// changed reports whether the header differs from the last look (true the
// first time). A header read while a writer updates it may be torn; that
// only shows as a change, and the next look compares with the torn copy.
func (w *shmWatch) changed() bool {
	var now [walHeaderLen]byte
	copy(now[:], w.mem)
	if w.seen && now == w.last {
		return false
	}
	w.last, w.seen = now, true
	return true
}

func (w *shmWatch) close() {
	if w != nil {
		_ = syscall.Munmap(w.mem)
	}
}
