//go:build linux || darwin

package sqlite

import (
	"os"
	"sync"
	"syscall"
)

// gate is described in gate.go. A nil *gate does nothing.
type gate struct {
	wait  *os.File // holds a shared lock while goroutines of this Backend wait
	probe *os.File // tests for shared locks of others

	mu      sync.Mutex
	waiting int // goroutines of this Backend waiting for the write lock
}

// openGate opens the side file of the database at path, or returns nil if
// it cannot (the Backend then works without the gate).
func openGate(path string) *gate {
	name := path + "-contextd-wait"
	wait, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil
	}
	probe, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		_ = wait.Close()
		return nil
	}
	return &gate{wait: wait, probe: probe}
}

// announce notes that a goroutine of this Backend waits for the write lock.
func (g *gate) announce() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting++; g.waiting == 1 {
		// Fails only while a holder probes; the next announcement of a
		// still waiting goroutine may then succeed.
		_ = syscall.Flock(int(g.wait.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	}
}

// withdraw undoes one announce.
func (g *gate) withdraw() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting--; g.waiting == 0 {
		_ = syscall.Flock(int(g.wait.Fd()), syscall.LOCK_UN)
	}
}

// othersWaiting reports whether another connection announced that it waits.
// While goroutines of this Backend wait themselves, its own announcement
// cannot be told apart, and it reports false: they need the write
// connection this Backend holds, not a pause.
func (g *gate) othersWaiting() bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	own := g.waiting
	g.mu.Unlock()
	if own > 0 {
		return false
	}
	fd := int(g.probe.Fd())
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	_ = syscall.Flock(fd, syscall.LOCK_UN)
	return false
}

func (g *gate) close() {
	if g != nil {
		_ = g.wait.Close()
		_ = g.probe.Close()
	}
}
