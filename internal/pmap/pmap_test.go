package pmap

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
)

// check compares m with want: Len, Get of every key and of absent ones,
// and All.
func check(t *testing.T, m Map[int], want map[string]int) {
	t.Helper()
	if m.Len() != len(want) {
		t.Fatalf("Len = %d, want %d", m.Len(), len(want))
	}
	for k, v := range want {
		if got, ok := m.Get(k); !ok || got != v {
			t.Fatalf("Get(%q) = %d, %v; want %d", k, got, ok, v)
		}
	}
	if _, ok := m.Get("absent-key"); ok {
		t.Fatal("Get of an absent key found it")
	}
	seen := map[string]int{}
	for k, v := range m.All() {
		if _, dup := seen[k]; dup {
			t.Fatalf("All yields %q twice", k)
		}
		seen[k] = v
	}
	if !maps.Equal(seen, want) {
		t.Fatalf("All = %v, want %v", seen, want)
	}
}

// runOps applies random sets and deletes to a Map (through Set/Delete or a
// Builder) and a Go map, checks they agree, and checks that every earlier
// version of the Map is unchanged.
func runOps(t *testing.T, seed uint64, keys, ops int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	var m Map[int]
	want := map[string]int{}
	type version struct {
		m    Map[int]
		want map[string]int
	}
	var versions []version
	b := NewBuilder(m)
	useBuilder := false
	for i := range ops {
		k := fmt.Sprintf("k%d", rng.IntN(keys))
		if i%50 == 0 {
			if useBuilder {
				m = b.Map()
			}
			versions = append(versions, version{m, maps.Clone(want)})
			useBuilder = rng.IntN(2) == 0
			b = NewBuilder(m)
		}
		del := rng.IntN(3) == 0
		switch {
		case useBuilder && del:
			b.Delete(k)
		case useBuilder:
			b.Set(k, i)
		case del:
			m = m.Delete(k)
		default:
			m = m.Set(k, i)
		}
		if del {
			delete(want, k)
		} else {
			want[k] = i
		}
	}
	if useBuilder {
		m = b.Map()
	}
	check(t, m, want)
	for _, v := range versions {
		check(t, v.m, v.want)
	}
}

func TestAgreesWithAGoMap(t *testing.T) {
	for seed := range uint64(20) {
		runOps(t, seed, 300, 3000)
	}
}

// TestCollisions forces hashes to collide, partly or fully, so deep paths
// and leaf chains are exercised.
func TestCollisions(t *testing.T) {
	for _, h := range []struct {
		name string
		fn   func(string) uint64
	}{
		{"all equal", func(string) uint64 { return 42 }},
		{"four values", func(k string) uint64 { return uint64(len(k)%4) << 58 }},
		{"low bits equal", func(k string) uint64 { return maphashOf(k) &^ 0xffff }},
	} {
		t.Run(h.name, func(t *testing.T) {
			saved := hashOf
			hashOf = h.fn
			defer func() { hashOf = saved }()
			for seed := range uint64(5) {
				runOps(t, seed, 60, 800)
			}
		})
	}
}

func maphashOf(k string) uint64 { return maphashString(k) }

func FuzzOps(f *testing.F) {
	f.Add([]byte{1, 2, 3, 1, 130, 2})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var m Map[int]
		b := NewBuilder(m)
		want := map[string]int{}
		for i, op := range ops {
			k := fmt.Sprintf("k%d", op&63)
			switch {
			case op&64 != 0:
				b.Delete(k)
				delete(want, k)
			default:
				b.Set(k, i)
				want[k] = i
			}
			if op&128 != 0 {
				// A map handed out must not change with later edits.
				m = b.Map()
				check(t, m, maps.Clone(want))
			}
		}
		check(t, b.Map(), want)
	})
}

func BenchmarkGet100k(b *testing.B) {
	bl := NewBuilder(Map[int]{})
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
		bl.Set(keys[i], i)
	}
	m := bl.Map()
	b.ResetTimer()
	for i := range b.N {
		m.Get(keys[i%len(keys)])
	}
}

func BenchmarkGoMapGet100k(b *testing.B) {
	m := map[string]int{}
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
		m[keys[i]] = i
	}
	b.ResetTimer()
	for i := range b.N {
		_ = m[keys[i%len(keys)]]
	}
}

func BenchmarkSet100k(b *testing.B) {
	bl := NewBuilder(Map[int]{})
	for i := range 100_000 {
		bl.Set(fmt.Sprintf("key-%d", i), i)
	}
	m := bl.Map()
	b.ResetTimer()
	for i := range b.N {
		m = m.Set("key-7", i)
	}
}

func BenchmarkBuild100k(b *testing.B) {
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	b.ResetTimer()
	for range b.N {
		bl := NewBuilder(Map[int]{})
		for i, k := range keys {
			bl.Set(k, i)
		}
		_ = bl.Map()
	}
}

// TestResetKeepsHandedOutMapsFrozen checks that a Builder reused with
// Reset (as the contextd cache reuses one per change) never changes a map
// it handed out before, nor the map it was reset to.
func TestResetKeepsHandedOutMapsFrozen(t *testing.T) {
	var b Builder[int]
	want := map[string]int{}
	var maps_ []Map[int]
	var wants []map[string]int
	for round := range 50 {
		b.Reset(b.Map())
		for i := range 20 {
			k := fmt.Sprintf("k%d", (round*7+i)%300)
			if i%5 == 4 {
				b.Delete(k)
				delete(want, k)
				continue
			}
			b.Set(k, round*100+i)
			want[k] = round*100 + i
		}
		maps_ = append(maps_, b.Map())
		wants = append(wants, maps.Clone(want))
	}
	for i, m := range maps_ {
		check(t, m, wants[i])
	}
	// Reset to an older map: changes from there leave the newer maps as
	// they were.
	b.Reset(maps_[10])
	b.Set("k1", -1)
	b.Delete("k2")
	for i, m := range maps_ {
		check(t, m, wants[i])
	}
}
