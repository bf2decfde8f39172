//go:build !(linux || darwin)

package sqlite

// gate does nothing where flock is not available; see gate.go.
type gate struct{}

func openGate(string) *gate { return nil }

func (*gate) announce()           {}
func (*gate) withdraw()           {}
func (*gate) othersWaiting() bool { return false }
func (*gate) close()              {}
