// Package examplebackend hands the examples their backends: the embedded
// memory backend by default, Redis at host:port when the -redis flag (or
// REDIS_ADDR) names one.
package examplebackend

import (
	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/examples/internal/exampleredis"
)

// Set opens backends over one shared storage, one per instance, as separate
// processes would each have their own client. It is for one goroutine.
type Set struct {
	redisAddr string
	mem       *memory.Backend
	closers   []func()
}

// New returns a Set on Redis at redisAddr, or on one memory backend if
// redisAddr is empty.
func New(redisAddr string) *Set {
	return &Set{redisAddr: redisAddr}
}

// Open returns a backend for one more instance: a new Redis client, or the
// Set's one memory backend, which in-process instances share.
func (s *Set) Open() (backend.Backend, error) {
	if s.redisAddr == "" {
		if s.mem == nil {
			s.mem = memory.New(nil)
			s.closers = append(s.closers, func() { _ = s.mem.Close() })
		}
		return s.mem, nil
	}
	b, closeRedis, err := exampleredis.Open(s.redisAddr)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, closeRedis)
	return b, nil
}

// Close closes every backend Open returned, last opened first. Close the
// Contexts on them before.
func (s *Set) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}
