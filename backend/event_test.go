package backend_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
)

func sampleEvent() backend.Event {
	return backend.Event{
		Head:   backend.Head{Epoch: "0123456789abcdef", Revision: 1<<40 + 7, Commit: "c7", Parent: "c6"},
		Origin: "instance-1",
		Changes: []backend.Change{
			{Key: "user", Value: []byte(`{"name":"Jane"}`)},
			{Key: "gone", Deleted: true},
			{Key: "big", Omitted: true},
			{Key: "empty", Value: []byte{}},
		},
	}
}

func TestEventRoundTrip(t *testing.T) {
	want := sampleEvent()
	p, err := backend.EncodeEvent(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := backend.DecodeEvent(p)
	if err != nil {
		t.Fatal(err)
	}
	// An empty value decodes as empty, not nil.
	want.Changes[3].Value = []byte{}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	// The decoded event does not alias the payload.
	for i := range p {
		p[i] = 0
	}
	if string(got.Changes[0].Value) != `{"name":"Jane"}` {
		t.Fatal("decoded values alias the payload")
	}
}

func TestFrameMatchesEncodeV1(t *testing.T) {
	e := sampleEvent()
	whole, _ := backend.EncodeEventV1(e)
	framed, err := backend.FrameEvent(e.Head, backend.EncodeEventBody(e.Origin, e.Changes))
	if err != nil || !bytes.Equal(whole, framed) {
		t.Fatalf("FrameEvent(EncodeEventBody) differs from EncodeEventV1: %v", err)
	}
	if _, err := backend.FrameEvent(backend.Head{Epoch: strings.Repeat("e", 256)}, nil); err == nil {
		t.Fatal("an epoch of 256 bytes was framed")
	}
}

func TestEventV1RoundTrip(t *testing.T) {
	want := sampleEvent()
	p, err := backend.EncodeEventV1(want)
	if err != nil {
		t.Fatal(err)
	}
	if p[0] != 1 || p[1] != 1 || int(p[2]) != len(want.Epoch) {
		t.Fatalf("version 1 header % x", p[:3])
	}
	got, err := backend.DecodeEvent(p)
	if err != nil {
		t.Fatal(err)
	}
	want.Changes[3].Value = []byte{}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("version 1 round trip:\n got %+v\nwant %+v", got, want)
	}
}

// TestEventV2Layout pins the bytes of version 2, which the Redis commit
// script reproduces: hex ids in binary, other ids as they are, the
// revision as a uvarint.
func TestEventV2Layout(t *testing.T) {
	e := backend.Event{
		Head:    backend.Head{Epoch: "0aff", Revision: 300, Commit: "x7", Parent: ""},
		Origin:  "ABCD",
		Changes: []backend.Change{{Key: "k", Value: []byte("v")}, {Key: "d", Deleted: true}, {Key: "o", Omitted: true}},
	}
	p, err := backend.EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		2, 1, // version, kind
		2<<1 | 1, 0x0a, 0xff, // epoch "0aff" in binary
		0xac, 0x02, // revision 300
		2 << 1, 'x', '7', // commit "x7" is not hex: as it is
		0,                          // no parent
		4 << 1, 'A', 'B', 'C', 'D', // upper case is not packed
		3,                 // changes
		0, 1, 'k', 1, 'v', // put
		1, 1, 'd', // delete
		2, 1, 'o', // omitted
	}
	if !bytes.Equal(p, want) {
		t.Fatalf("version 2 bytes\n got % x\nwant % x", p, want)
	}
	if got := backend.AppendWireID([]byte{9}, "0aff"); !bytes.Equal(got, []byte{9, 5, 0x0a, 0xff}) {
		t.Fatalf("AppendWireID = % x", got)
	}
}

// TestEventV2Size checks the budget the issue sets: an event of one put,
// with the 16-hex-digit ids contextd and its backends make, costs at most
// the value plus 64 bytes.
func TestEventV2Size(t *testing.T) {
	id := func(n int) string { return strings.Repeat("9f", n/2) }
	e := backend.Event{
		Head:    backend.Head{Epoch: id(18), Revision: 1 << 20, Commit: id(18), Parent: id(18)},
		Origin:  id(16),
		Changes: []backend.Change{{Key: "counter", Value: make([]byte, 100)}},
	}
	p, err := backend.EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	if over := len(p) - 100; over > 64 {
		t.Fatalf("event of a 100-byte value takes %d bytes, %d over the value; want at most 64", len(p), over)
	}
	v1, _ := backend.EncodeEventV1(e)
	t.Logf("version 2: value + %d bytes; version 1: value + %d", len(p)-100, len(v1)-100)
}

// TestEncodeEventSizesItsBuffer checks that EncodeEvent writes into one
// buffer of about the event's size when its ids are in hex, as stores and
// instances make them: no regrowth (one allocation), and at most the room
// of the longest expiry per change spare. Other ids may take a second.
func TestEncodeEventSizesItsBuffer(t *testing.T) {
	hexID := strings.Repeat("9f", 8)
	events := []struct {
		e      backend.Event
		allocs float64
	}{
		{backend.Event{Head: backend.Head{Epoch: hexID, Revision: 1, Commit: hexID, Parent: hexID}, Origin: hexID,
			Changes: []backend.Change{{Key: "p", Value: []byte(`{"X":1,"Y":2}`)}}}, 1},
		{backend.Event{Head: backend.Head{Epoch: hexID + hexID, Revision: 1 << 62, Commit: "abc", Parent: ""}, Origin: hexID,
			Changes: []backend.Change{
				{Key: strings.Repeat("k", 200), Value: make([]byte, 20_000), Expires: time.UnixMilli(1 << 41)},
				{Key: "t", Value: []byte("1"), TTL: time.Hour},
				{Key: "d", Deleted: true},
				{Key: "o", Omitted: true},
			}}, 1},
		{sampleEvent(), 2}, // its origin is not in hex
		{backend.Event{Head: backend.Head{Epoch: "Not-Hex!", Revision: 1, Commit: hexID}, Origin: strings.Repeat("o", 300)}, 2},
	}
	for i, tc := range events {
		var p []byte
		allocs := testing.AllocsPerRun(10, func() {
			var err error
			if p, err = backend.EncodeEvent(tc.e); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > tc.allocs {
			t.Errorf("event %d: %v allocations, want at most %v", i, allocs, tc.allocs)
		}
		// make gives the capacity asked for: what is spare is what the
		// size computed above the bytes written (an expiry's room).
		if spare := cap(p) - len(p); tc.allocs == 1 && spare > 8+10*len(tc.e.Changes) {
			t.Errorf("event %d: %d bytes spare after %d", i, spare, len(p))
		}
		if got, err := backend.DecodeEvent(p); err != nil || got.Revision != tc.e.Revision || got.Origin != tc.e.Origin || got.Epoch != tc.e.Epoch {
			t.Errorf("event %d does not decode to itself: %+v, %v", i, got, err)
		}
	}
}

func TestEncodeRefusesLongIDs(t *testing.T) {
	for _, h := range []backend.Head{{Epoch: strings.Repeat("e", 256)}, {Commit: strings.Repeat("c", 256)}, {Parent: strings.Repeat("ab", 128)}} {
		if _, err := backend.EncodeEvent(backend.Event{Head: h}); err == nil {
			t.Errorf("EncodeEvent of %d/%d/%d-byte ids succeeded", len(h.Epoch), len(h.Commit), len(h.Parent))
		}
		if _, err := backend.EncodeEventV1(backend.Event{Head: h}); err == nil {
			t.Errorf("EncodeEventV1 of %d/%d/%d-byte ids succeeded", len(h.Epoch), len(h.Commit), len(h.Parent))
		}
	}
	// 254 hex digits are the longest id that fits.
	if _, err := backend.EncodeEvent(backend.Event{Head: backend.Head{Commit: strings.Repeat("ab", 127)}}); err != nil {
		t.Errorf("EncodeEvent of a 254-digit hex commit id: %v", err)
	}
}

func TestEventFromBatchValueLimit(t *testing.T) {
	b := backend.Batch{Origin: "o", EventValueLimit: 10, Ops: []backend.Op{
		{Key: "a", Value: []byte("123456")},
		{Key: "b", Value: []byte("123456")}, // would exceed the budget
		{Key: "c", Value: []byte("1234")},   // still fits
		{Key: "d", Delete: true},
	}}
	e := backend.EventFromBatch(backend.Head{Epoch: "x", Revision: 3}, b)
	if e.Revision != 3 || e.Origin != "o" || len(e.Changes) != 4 {
		t.Fatalf("event %+v", e)
	}
	omitted := []bool{false, true, false, false}
	for i, ch := range e.Changes {
		if ch.Omitted != omitted[i] {
			t.Errorf("change %q omitted = %v, want %v", ch.Key, ch.Omitted, omitted[i])
		}
	}
	if !e.Changes[3].Deleted {
		t.Error("delete not marked")
	}
	keysOnly := backend.EventFromBatch(backend.Head{}, backend.Batch{Ops: []backend.Op{{Key: "a", Value: []byte("1")}}})
	if !keysOnly.Changes[0].Omitted {
		t.Error("a zero limit carried a value")
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	good, _ := backend.EncodeEvent(sampleEvent())
	v1, _ := backend.EncodeEventV1(sampleEvent())
	cases := map[string][]byte{
		"v1 trailing bytes":     append(append([]byte{}, v1...), 0),
		"v1 truncated":          v1[:len(v1)-1],
		"hex id written raw":    {2, 1, 2 << 1, 'a', 'b', 1, 0, 0, 0, 0},
		"empty binary id":       {2, 1, 1, 1, 0, 0, 0, 0},
		"binary id too long":    append([]byte{2, 1, 0xff, 0x01}, make([]byte, 130)...),
		"raw id too long":       append([]byte{2, 1, 0x80, 0x04}, bytes.Repeat([]byte{'x'}, 256)...),
		"v2 revision not short": {2, 1, 0, 0x80, 0x00, 0, 0, 0, 0},
		"empty":                 {},
		"unknown version":       append([]byte{9}, good[1:]...),
		"unknown kind":          append([]byte{1, 7}, good[2:]...),
		"trailing bytes":        append(append([]byte{}, good...), 0),
		"huge count":            v2Body(0xff, 0xff, 0xff, 0xff, 0x0f),
		"bad flags":             v2Body(1, 9, 1, 'k'),
		"empty key":             v2Body(1, 1, 0),
		"bad varint":            v2Body(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
	}
	for i := 1; i < len(good); i++ {
		cases["truncated at "+string(rune('0'+i%10))+"/"+strings.Repeat("|", i/10)] = good[:i]
	}
	for name, p := range cases {
		if _, err := backend.DecodeEvent(p); !errors.Is(err, backend.ErrInvalidEvent) {
			t.Errorf("%s: DecodeEvent = %v, want ErrInvalidEvent", name, err)
		}
	}
}

// v2Body returns a version 2 event with empty ids at revision 1 and the
// given bytes after the origin.
func v2Body(changes ...byte) []byte {
	return append([]byte{2, 1, 0, 1, 0, 0, 0}, changes...)
}

// FuzzDecodeEvent checks that decoding never panics, and that whatever
// decodes encodes back to the same bytes in its version.
func FuzzDecodeEvent(f *testing.F) {
	good, _ := backend.EncodeEvent(sampleEvent())
	v1, _ := backend.EncodeEventV1(sampleEvent())
	f.Add(good)
	f.Add(v1)
	f.Add([]byte{})
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Add([]byte{2, 1, 3, 0xab, 1, 0, 0, 0, 1, 0, 1, 'k', 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		e, err := backend.DecodeEvent(p)
		// The two-step decoder agrees with DecodeEvent on every input.
		var dec backend.EventDecoder
		head, herr := dec.DecodeHead(p)
		if (err == nil) != (herr == nil) {
			t.Fatalf("DecodeEvent: %v, EventDecoder.DecodeHead: %v", err, herr)
		}
		if err != nil {
			return
		}
		head.Changes = dec.DecodeChanges()
		if !reflect.DeepEqual(head, e) {
			t.Fatalf("EventDecoder: %+v, DecodeEvent: %+v", head, e)
		}
		encode := backend.EncodeEvent
		if p[0] == 1 {
			encode = backend.EncodeEventV1
		}
		again, err := encode(e)
		if err != nil {
			t.Fatalf("a decoded event does not encode: %v", err)
		}
		if !bytes.Equal(again, p) {
			t.Fatalf("decode/encode changed the bytes:\n% x\n% x", p, again)
		}
	})
}

// FuzzEncodeEvent checks that any event with ids within the limits
// encodes, in both versions, to bytes that decode to the same event: ids
// in hex or not, of any length, upper or lower case.
func FuzzEncodeEvent(f *testing.F) {
	f.Add("0123456789abcdef", uint64(7), "c7", "", "ABCDEF", "k", []byte("v"), byte(0))
	f.Add("", uint64(0), "0", "00", "0123456789abcdef", "gone", []byte{}, byte(1))
	f.Add("e", uint64(1<<63), "abc", "ab", "", "big", []byte(nil), byte(2))
	f.Fuzz(func(t *testing.T, epoch string, rev uint64, commit, parent, origin, key string, value []byte, kind byte) {
		if key == "" || len(epoch) > backend.MaxEpochLen || len(commit) > backend.MaxEpochLen || len(parent) > backend.MaxEpochLen {
			return
		}
		ch := backend.Change{Key: key}
		switch kind % 3 {
		case 0:
			ch.Value = append([]byte{}, value...)
		case 1:
			ch.Deleted = true
		case 2:
			ch.Omitted = true
		}
		want := backend.Event{Head: backend.Head{Epoch: epoch, Revision: rev, Commit: commit, Parent: parent}, Origin: origin, Changes: []backend.Change{ch}}
		for version, encode := range map[int]func(backend.Event) ([]byte, error){1: backend.EncodeEventV1, 2: backend.EncodeEvent} {
			p, err := encode(want)
			if err != nil {
				t.Fatalf("version %d: %v", version, err)
			}
			got, err := backend.DecodeEvent(p)
			if err != nil {
				t.Fatalf("version %d: decoding an encoded event: %v", version, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("version %d round trip:\n got %+v\nwant %+v", version, got, want)
			}
		}
	})
}

// TestEventDecoderStream checks that EventDecoder decodes a stream of
// events as DecodeEvent does, rejects what DecodeEvent rejects in its first
// step, and, once the stream's ids are known, allocates only for the new
// commit id of each event's head.
func TestEventDecoderStream(t *testing.T) {
	const epoch = "00112233445566778899aabbccddeeff"
	origins := []string{"0a0b0c0d0e0f", "instance-2", ""}
	var payloads [][]byte
	var want []backend.Event
	parent := ""
	for i := range 40 {
		commit := strings.Repeat(string(hexDigit(i%16)), 15) + "0" + string(hexDigit(i/16))
		if i%7 == 3 {
			commit = "raw-" + commit
		}
		e := backend.Event{
			Head:    backend.Head{Epoch: epoch, Revision: uint64(i + 1), Commit: commit, Parent: parent},
			Origin:  origins[i%len(origins)],
			Changes: []backend.Change{{Key: "k", Value: []byte{byte(i)}}, {Key: "d", Deleted: true}},
		}
		p, err := backend.EncodeEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		payloads, want, parent = append(payloads, p), append(want, e), commit
	}
	var dec backend.EventDecoder
	for i, p := range payloads {
		head, err := dec.DecodeHead(p)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if head.Changes != nil {
			t.Fatalf("event %d: DecodeHead returned changes", i)
		}
		head.Changes = dec.DecodeChanges()
		if !reflect.DeepEqual(head, want[i]) {
			t.Fatalf("event %d:\n got %+v\nwant %+v", i, head, want[i])
		}
	}
	// A steady stream: the same epoch and origin, the parent is the
	// previous commit. Only the new commit id is allocated.
	a := backend.Event{Head: backend.Head{Epoch: epoch, Revision: 50, Commit: "aaaaaaaaaaaaaaaa", Parent: "bbbbbbbbbbbbbbbb"}, Origin: origins[0], Changes: []backend.Change{{Key: "k", Value: []byte("v")}}}
	b := a
	b.Revision, b.Commit, b.Parent = 51, "cccccccccccccccc", a.Commit
	pa, _ := backend.EncodeEvent(a)
	pb, _ := backend.EncodeEvent(b)
	if _, err := dec.DecodeHead(pa); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := dec.DecodeHead(pb); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		// pb's ids are all known after the first run: nothing is new.
		t.Fatalf("DecodeHead of a known event allocated %v times, want 0", allocs)
	}
	// A malformed payload fails in DecodeHead, and leaves no changes.
	bad := append(append([]byte{}, pb...), 0)
	if _, err := dec.DecodeHead(bad); !errors.Is(err, backend.ErrInvalidEvent) {
		t.Fatalf("DecodeHead of a payload with a trailing byte = %v, want ErrInvalidEvent", err)
	}
	if ch := dec.DecodeChanges(); ch != nil {
		t.Fatalf("DecodeChanges after a failed DecodeHead = %v, want nil", ch)
	}
}

// TestEventDecoderKeepsIDsFoundAgain: in a long stream of one writer's
// events, each allocates only its new commit id; the epoch and the origin,
// found in every event, are not pushed out of the decoder's recent ids by
// the commit ids that come and go.
func TestEventDecoderKeepsIDsFoundAgain(t *testing.T) {
	const n = 200
	payloads := make([][]byte, n)
	parent := ""
	for i := range payloads {
		commit := fmt.Sprintf("%016x", 0xc0ffee0000+i)
		p, err := backend.EncodeEvent(backend.Event{
			Head:    backend.Head{Epoch: "00112233445566778899aabbccddeeff", Revision: uint64(i + 1), Commit: commit, Parent: parent},
			Origin:  "0a0b0c0d0e0f1011",
			Changes: []backend.Change{{Key: "k", Value: []byte("v")}},
		})
		if err != nil {
			t.Fatal(err)
		}
		payloads[i], parent = p, commit
	}
	var dec backend.EventDecoder
	if _, err := dec.DecodeHead(payloads[0]); err != nil {
		t.Fatal(err)
	}
	// Counted by hand: AllocsPerRun rounds the average down, and a miss
	// every few events is what this is about.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, p := range payloads[1:] {
		if _, err := dec.DecodeHead(p); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	// A few allocations of the runtime's own may fall in the count; the
	// old round-robin replacement made about 1.28 per event.
	if got := after.Mallocs - before.Mallocs; got > n-1+n/20 {
		t.Fatalf("DecodeHead allocated %d times for %d events, want about one each (the new commit id)", got, n-1)
	}
}

func hexDigit(i int) byte { return "0123456789abcdef"[i] }

// TestPeekEvent checks that PeekEvent finds an event's epoch, revision and
// origin in their wire form, and refuses what is not a version 2 event.
func TestPeekEvent(t *testing.T) {
	e := backend.Event{
		Head:    backend.Head{Epoch: "0aff", Revision: 300, Commit: "x7", Parent: "01"},
		Origin:  "ABCD",
		Changes: []backend.Change{{Key: "k", Value: []byte("v")}},
	}
	p, err := backend.EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	epoch, rev, origin, ok := backend.PeekEvent(p)
	if !ok || rev != 300 || !bytes.Equal(epoch, backend.AppendWireID(nil, "0aff")) || !bytes.Equal(origin, backend.AppendWireID(nil, "ABCD")) {
		t.Fatalf("PeekEvent = % x, %d, % x, %v", epoch, rev, origin, ok)
	}
	v1, err := backend.EncodeEventV1(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{nil, p[:1], p[:12], v1, {3, 1}} {
		if _, _, _, ok := backend.PeekEvent(bad); ok {
			t.Errorf("PeekEvent(% x) accepted it", bad)
		}
	}
}
