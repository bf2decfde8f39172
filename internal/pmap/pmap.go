// Package pmap is a persistent (immutable) map from strings to values: a
// hash array mapped trie. A Map is never changed; Set and Delete return a
// new Map that shares all but the changed path with the old one, so a
// reader can hold a Map and read or iterate it while writers publish new
// ones, without locks and without copying. A Builder applies many changes
// in place to the nodes it created itself, for bulk loads and batches.
//
// Lookups hash the key (hash/maphash, one seed per process) and walk at
// most 13 levels of 32-way nodes; with n keys about log32(n) of them.
package pmap

import (
	"hash/maphash"
	"iter"
	"math/bits"
	"sync/atomic"
)

const (
	bitsPerLevel = 5
	fanout       = 1 << bitsPerLevel
	mask         = fanout - 1
	// maxShift is the last level that still uses fresh hash bits; keys
	// whose 64-bit hashes are equal share a leaf chain there.
	maxShift = 60
)

var seed = maphash.MakeSeed()

// hashOf is the key hash; tests replace it to force collisions.
var hashOf = maphashString

// Map is an immutable map. The zero value is an empty map, ready to use.
type Map[V any] struct {
	root *node[V]
	size int
}

// owners hands out the marks of the nodes a Builder may change in place:
// a number, unique in the process, where a pointer to a fresh object would
// cost an allocation per change. 0 marks no Builder.
var owners atomic.Uint64

type node[V any] struct {
	bitmap uint32
	slots  []slot[V]
	owner  uint64
}

// slot is one used position of a node: a subtree or a leaf.
type slot[V any] struct {
	sub  *node[V]
	leaf *leaf[V]
}

// leaf is one entry; next chains entries whose hashes are equal in every
// bit. A map holds one leaf per key, so the leaf does not keep its key's
// hash: lookups compare keys, and the rare split of a slot hashes the key
// already there again.
type leaf[V any] struct {
	key  string
	val  V
	next *leaf[V]
}

// Len returns the number of keys.
func (m Map[V]) Len() int { return m.size }

// Get returns the value of key and whether it is present.
func (m Map[V]) Get(key string) (V, bool) {
	h := hashOf(key)
	n := m.root
	for shift := uint(0); n != nil; shift += bitsPerLevel {
		bit := uint32(1) << ((h >> shift) & mask)
		if n.bitmap&bit == 0 {
			break
		}
		s := n.slots[bits.OnesCount32(n.bitmap&(bit-1))]
		if s.sub != nil {
			n = s.sub
			continue
		}
		for l := s.leaf; l != nil; l = l.next {
			if l.key == key {
				return l.val, true
			}
		}
		break
	}
	var zero V
	return zero, false
}

// Set returns a map with key set to v.
func (m Map[V]) Set(key string, v V) Map[V] {
	b := Builder[V]{m: m}
	b.Set(key, v)
	return b.Map()
}

// Delete returns a map without key.
func (m Map[V]) Delete(key string) Map[V] {
	b := Builder[V]{m: m}
	b.Delete(key)
	return b.Map()
}

// All returns the entries in no particular order (the same order for the
// same map).
func (m Map[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		if m.root != nil {
			m.root.each(yield)
		}
	}
}

func (n *node[V]) each(yield func(string, V) bool) bool {
	for _, s := range n.slots {
		if s.sub != nil {
			if !s.sub.each(yield) {
				return false
			}
			continue
		}
		for l := s.leaf; l != nil; l = l.next {
			if !yield(l.key, l.val) {
				return false
			}
		}
	}
	return true
}

// Builder changes a map in place where it can: nodes it made itself are
// changed, others are copied first, so maps handed out before (by Map)
// never change. Use one Builder from one goroutine.
type Builder[V any] struct {
	m   Map[V]
	own uint64
	// frozen says that own's nodes have been handed out (Map) or may be
	// shared with the map Reset started from: own must be replaced
	// before the next change.
	frozen bool
}

// NewBuilder returns a Builder that starts from m.
func NewBuilder[V any](m Map[V]) *Builder[V] {
	return &Builder[V]{m: m}
}

// Len returns the number of keys in the map being built.
func (b *Builder[V]) Len() int { return b.m.size }

// Get returns the value of key in the map being built.
func (b *Builder[V]) Get(key string) (V, bool) { return b.m.Get(key) }

// Map returns the map built so far. The Builder stays usable; its later
// changes do not affect the returned map.
func (b *Builder[V]) Map() Map[V] {
	// Nodes handed out are frozen: the next change takes a new owner.
	b.frozen = true
	return b.m
}

// Reset makes the Builder start over from m, as NewBuilder(m) does,
// without allocating a new Builder.
func (b *Builder[V]) Reset(m Map[V]) {
	b.m = m
	// m may share nodes with the map built so far: none of them may be
	// changed in place any more.
	b.frozen = true
}

// owned returns the Builder's owner mark, a new one after Map or Reset.
func (b *Builder[V]) owned() uint64 {
	if b.frozen || b.own == 0 {
		b.own, b.frozen = owners.Add(1), false
	}
	return b.own
}

// editable returns n itself if the Builder owns it, else a copy it owns.
func (b *Builder[V]) editable(n *node[V]) *node[V] {
	if n.owner == b.owned() {
		return n
	}
	c := &node[V]{bitmap: n.bitmap, slots: make([]slot[V], len(n.slots), len(n.slots)+1), owner: b.owned()}
	copy(c.slots, n.slots)
	return c
}

// Set sets key to v.
func (b *Builder[V]) Set(key string, v V) {
	h := hashOf(key)
	if b.m.root == nil {
		b.m.root = &node[V]{owner: b.owned()}
	} else {
		b.m.root = b.editable(b.m.root)
	}
	if b.set(b.m.root, 0, h, &leaf[V]{key: key, val: v}) {
		b.m.size++
	}
}

// set puts l, whose key hashes to h, below n (owned by b) at shift; it
// reports whether the key is new.
func (b *Builder[V]) set(n *node[V], shift uint, h uint64, l *leaf[V]) bool {
	bit := uint32(1) << ((h >> shift) & mask)
	pos := bits.OnesCount32(n.bitmap & (bit - 1))
	if n.bitmap&bit == 0 {
		n.slots = append(n.slots, slot[V]{})
		copy(n.slots[pos+1:], n.slots[pos:])
		n.slots[pos] = slot[V]{leaf: l}
		n.bitmap |= bit
		return true
	}
	s := &n.slots[pos]
	if s.sub != nil {
		s.sub = b.editable(s.sub)
		return b.set(s.sub, shift+bitsPerLevel, h, l)
	}
	old := s.leaf
	oldHash := h
	if old.key != l.key {
		oldHash = hashOf(old.key)
	}
	if oldHash == h {
		// The same key, or a full hash collision: a new chain.
		chain, added := replaceInChain(old, l)
		s.leaf = chain
		return added
	}
	if shift >= maxShift {
		// Cannot happen: at this depth every hash bit is used, so the
		// hashes are equal (handled above).
		panic("pmap: hashes differ past the last level")
	}
	// Two different hashes in one slot: push both one level down.
	sub := &node[V]{owner: b.owned()}
	b.set(sub, shift+bitsPerLevel, oldHash, old) // a chain moves whole: its hashes are equal
	b.set(sub, shift+bitsPerLevel, h, l)
	s.leaf, s.sub = nil, sub
	return true
}

// replaceInChain returns a chain (of equal hashes) with l's key set to l,
// sharing the unchanged leaves after it; added reports a new key.
func replaceInChain[V any](chain, l *leaf[V]) (*leaf[V], bool) {
	// Copy the leaves before the match; the rest is shared.
	var head, tail *leaf[V]
	for c := chain; c != nil; c = c.next {
		if c.key == l.key {
			l.next = c.next
			if tail == nil {
				return l, false
			}
			tail.next = l
			return head, false
		}
		cp := &leaf[V]{key: c.key, val: c.val}
		if tail == nil {
			head = cp
		} else {
			tail.next = cp
		}
		tail = cp
	}
	l.next = nil
	tail.next = l
	return head, true
}

// Delete removes key.
func (b *Builder[V]) Delete(key string) {
	if b.m.root == nil {
		return
	}
	h := hashOf(key)
	if _, ok := b.m.Get(key); !ok {
		return
	}
	b.m.root = b.editable(b.m.root)
	b.del(b.m.root, 0, h, key)
	b.m.size--
	if len(b.m.root.slots) == 0 {
		b.m.root = nil
	}
}

// del removes key (present) below n (owned by b).
func (b *Builder[V]) del(n *node[V], shift uint, h uint64, key string) {
	bit := uint32(1) << ((h >> shift) & mask)
	pos := bits.OnesCount32(n.bitmap & (bit - 1))
	s := &n.slots[pos]
	if s.sub != nil {
		s.sub = b.editable(s.sub)
		b.del(s.sub, shift+bitsPerLevel, h, key)
		switch sub := s.sub; {
		case len(sub.slots) == 0:
			n.removeSlot(pos, bit)
		case len(sub.slots) == 1 && sub.slots[0].leaf != nil:
			// A lone leaf moves up, so lookups stay short.
			s.leaf, s.sub = sub.slots[0].leaf, nil
		}
		return
	}
	chain := removeFromChain(s.leaf, key)
	if chain == nil {
		n.removeSlot(pos, bit)
		return
	}
	s.leaf = chain
}

func (n *node[V]) removeSlot(pos int, bit uint32) {
	copy(n.slots[pos:], n.slots[pos+1:])
	n.slots[len(n.slots)-1] = slot[V]{}
	n.slots = n.slots[:len(n.slots)-1]
	n.bitmap &^= bit
}

// removeFromChain returns the chain without key, copying the leaves
// before it.
func removeFromChain[V any](chain *leaf[V], key string) *leaf[V] {
	var head, tail *leaf[V]
	for c := chain; c != nil; c = c.next {
		if c.key == key {
			if tail == nil {
				return c.next
			}
			tail.next = c.next
			return head
		}
		cp := &leaf[V]{key: c.key, val: c.val}
		if tail == nil {
			head = cp
		} else {
			tail.next = cp
		}
		tail = cp
	}
	return head
}

func maphashString(k string) uint64 { return maphash.String(seed, k) }
