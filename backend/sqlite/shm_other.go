//go:build !(linux || darwin)

package sqlite

// shmWatch is not available here: the poller asks PRAGMA data_version every
// turn.
type shmWatch struct{}

func openShmWatch(string) *shmWatch { return nil }

func (*shmWatch) changed() bool { return true }

func (*shmWatch) close() {}
