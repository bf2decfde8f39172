package backend_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

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

func TestFrameMatchesEncode(t *testing.T) {
	e := sampleEvent()
	whole, _ := backend.EncodeEvent(e)
	framed, err := backend.FrameEvent(e.Head, backend.EncodeEventBody(e.Origin, e.Changes))
	if err != nil || !bytes.Equal(whole, framed) {
		t.Fatalf("FrameEvent(EncodeEventBody) differs from EncodeEvent: %v", err)
	}
	// The header layout the Redis script reproduces: version, kind, epoch
	// length, epoch, revision big-endian.
	if whole[0] != 1 || whole[1] != 1 || int(whole[2]) != len(e.Epoch) {
		t.Fatalf("header % x", whole[:3])
	}
	if _, err := backend.FrameEvent(backend.Head{Epoch: strings.Repeat("e", 256)}, nil); err == nil {
		t.Fatal("an epoch of 256 bytes was framed")
	}
	if _, err := backend.FrameEvent(backend.Head{Commit: strings.Repeat("c", 256)}, nil); err == nil {
		t.Fatal("a commit id of 256 bytes was framed")
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
	cases := map[string][]byte{
		"empty":           {},
		"unknown version": append([]byte{9}, good[1:]...),
		"unknown kind":    append([]byte{1, 7}, good[2:]...),
		"trailing bytes":  append(append([]byte{}, good...), 0),
		"huge count":      mustFrame(t, append([]byte{0}, 0xff, 0xff, 0xff, 0xff, 0x0f)),
		"bad flags":       mustFrame(t, []byte{0, 1, 9, 1, 'k'}),
		"empty key":       mustFrame(t, []byte{0, 1, 1, 0}),
		"bad varint":      mustFrame(t, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}),
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

func mustFrame(t *testing.T, body []byte) []byte {
	t.Helper()
	p, err := backend.FrameEvent(backend.Head{Epoch: "e", Revision: 1}, body)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FuzzDecodeEvent checks that decoding never panics, and that whatever
// decodes encodes back to the same bytes.
func FuzzDecodeEvent(f *testing.F) {
	good, _ := backend.EncodeEvent(sampleEvent())
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		e, err := backend.DecodeEvent(p)
		if err != nil {
			return
		}
		again, err := backend.EncodeEvent(e)
		if err != nil {
			t.Fatalf("a decoded event does not encode: %v", err)
		}
		if !bytes.Equal(again, p) {
			t.Fatalf("decode/encode changed the bytes:\n% x\n% x", p, again)
		}
	})
}
