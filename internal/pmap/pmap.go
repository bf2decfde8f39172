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

// newNode returns a node owned by owner with bitmap and a copy of slots,
// and room for want slots. The node and its slots are one allocation
// (see nodeWith): a write copies one node per level of its path, and
// a loaded map holds about one node per ten keys, so this saves an
// allocation per level on the write path and the node's separate header
// in memory.
func newNode[V any](bitmap uint32, owner uint64, slots []slot[V], want int) *node[V] {
	n := nodeWith[V](roomFor(want))
	n.bitmap, n.owner = bitmap, owner
	n.slots = n.slots[:len(slots)]
	copy(n.slots, slots)
	return n
}

// roomFor returns the capacity to give a node that needs want slots: want
// itself up to 13, above that the largest capacity that fits the same Go
// size class as want (a node of c slots takes 40 + 16c bytes; above 256
// bytes the size classes are 32 or more bytes apart).
func roomFor(want int) int {
	switch {
	case want <= 13:
		return max(want, 1)
	case want >= 30:
		return fanout
	}
	return want | 1 // 14 → 15, 16 → 17, ...: the same size class
}

// nodeWith returns an empty node with room for c slots (a value roomFor
// returns) in the same allocation: the slots are an array right after
// the node, which its slots slice points into.
func nodeWith[V any](c int) *node[V] {
	switch c {
	case 1:
		p := new(struct {
			n node[V]
			a [1]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 2:
		p := new(struct {
			n node[V]
			a [2]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 3:
		p := new(struct {
			n node[V]
			a [3]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 4:
		p := new(struct {
			n node[V]
			a [4]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 5:
		p := new(struct {
			n node[V]
			a [5]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 6:
		p := new(struct {
			n node[V]
			a [6]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 7:
		p := new(struct {
			n node[V]
			a [7]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 8:
		p := new(struct {
			n node[V]
			a [8]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 9:
		p := new(struct {
			n node[V]
			a [9]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 10:
		p := new(struct {
			n node[V]
			a [10]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 11:
		p := new(struct {
			n node[V]
			a [11]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 12:
		p := new(struct {
			n node[V]
			a [12]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 13:
		p := new(struct {
			n node[V]
			a [13]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 15:
		p := new(struct {
			n node[V]
			a [15]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 17:
		p := new(struct {
			n node[V]
			a [17]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 19:
		p := new(struct {
			n node[V]
			a [19]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 21:
		p := new(struct {
			n node[V]
			a [21]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 23:
		p := new(struct {
			n node[V]
			a [23]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 25:
		p := new(struct {
			n node[V]
			a [25]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 27:
		p := new(struct {
			n node[V]
			a [27]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case 29:
		p := new(struct {
			n node[V]
			a [29]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	case fanout:
		p := new(struct {
			n node[V]
			a [fanout]slot[V]
		})
		p.n.slots = p.a[:0]
		return &p.n
	}
	panic("pmap: no node of that capacity")
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

// editable returns n itself if the Builder owns it, else a copy it owns
// with room for grow more slots.
func (b *Builder[V]) editable(n *node[V], grow int) *node[V] {
	if n.owner == b.owned() {
		return n
	}
	return newNode(n.bitmap, b.owned(), n.slots, len(n.slots)+grow)
}

// Set sets key to v.
func (b *Builder[V]) Set(key string, v V) {
	h := hashOf(key)
	if b.m.root == nil {
		b.m.root = newNode[V](0, b.owned(), nil, 1)
	} else {
		b.m.root = b.editable(b.m.root, 1)
	}
	var added bool
	b.m.root, added = b.set(b.m.root, 0, h, &leaf[V]{key: key, val: v})
	if added {
		b.m.size++
	}
}

// set puts l, whose key hashes to h, below n (owned by b) at shift; it
// returns n, or the larger copy that replaces it if n had no room for a
// new slot, and reports whether the key is new.
func (b *Builder[V]) set(n *node[V], shift uint, h uint64, l *leaf[V]) (*node[V], bool) {
	bit := uint32(1) << ((h >> shift) & mask)
	pos := bits.OnesCount32(n.bitmap & (bit - 1))
	if n.bitmap&bit == 0 {
		if len(n.slots) == cap(n.slots) {
			// Grow by half (at least one), so that a bulk load copies
			// each node a few times, not once per key, and leaves it
			// with little spare room. n is the Builder's own: nothing
			// else refers to it.
			n = newNode(n.bitmap, n.owner, n.slots, len(n.slots)+max(1, len(n.slots)/2))
		}
		n.slots = n.slots[:len(n.slots)+1]
		copy(n.slots[pos+1:], n.slots[pos:])
		n.slots[pos] = slot[V]{leaf: l}
		n.bitmap |= bit
		return n, true
	}
	s := &n.slots[pos]
	if s.sub != nil {
		var added bool
		s.sub, added = b.set(b.editable(s.sub, 1), shift+bitsPerLevel, h, l)
		return n, added
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
		return n, added
	}
	if shift >= maxShift {
		// Cannot happen: at this depth every hash bit is used, so the
		// hashes are equal (handled above).
		panic("pmap: hashes differ past the last level")
	}
	// Two different hashes in one slot: push both one level down.
	sub := newNode[V](0, b.owned(), nil, 2)
	sub, _ = b.set(sub, shift+bitsPerLevel, oldHash, old) // a chain moves whole: its hashes are equal
	sub, _ = b.set(sub, shift+bitsPerLevel, h, l)
	s.leaf, s.sub = nil, sub
	return n, true
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
	b.m.root = b.editable(b.m.root, 0)
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
		s.sub = b.editable(s.sub, 0)
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
