package backend_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/contextd-go/contextd/backend"
)

// TestEventDecoderInterningMatchesDecodeEvent: a long stream of
// events from a varying number of writers, epochs, hex and non-hex ids,
// and both wire versions, decoded with one EventDecoder (kept ids, the
// clock rule), gives exactly what DecodeEvent gives each event alone, and
// the ids it returns do not change when the payloads are overwritten
// afterwards (no aliasing of the payload buffers).
func TestEventDecoderInterningMatchesDecodeEvent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(pool []string) string { return pool[rng.IntN(len(pool))] }
	hexID := func() string { return fmt.Sprintf("%016x", rng.Uint64()) }
	var origins, epochs []string
	for i := range 12 {
		origins = append(origins, hexID())
		if i%3 == 0 {
			origins = append(origins, fmt.Sprintf("node-%d", i)) // not hex
		}
	}
	for range 3 {
		epochs = append(epochs, hexID()+hexID())
	}
	epochs = append(epochs, "E-not-hex")
	var dec backend.EventDecoder
	buf := make([]byte, 0, 512)
	type got struct {
		e    backend.Event
		want backend.Event
	}
	var kept []got
	parent := ""
	for i := range 5000 {
		writers := 1 + (i/500)%10 // 1..10 origins in turn
		commit := hexID()
		if rng.IntN(10) == 0 {
			commit = "c-" + commit // not hex
		}
		ev := backend.Event{
			Head:    backend.Head{Epoch: pick(epochs[:1+(i/1500)%4]), Revision: uint64(i + 1), Commit: commit, Parent: parent},
			Origin:  pick(origins[:writers]),
			Changes: []backend.Change{{Key: "k", Value: []byte{byte(i)}}},
		}
		parent = commit
		var p []byte
		var err error
		if rng.IntN(8) == 0 {
			p, err = backend.EncodeEventV1(ev)
		} else {
			p, err = backend.EncodeEvent(ev)
		}
		if err != nil {
			t.Fatal(err)
		}
		// One reused buffer, as a read loop's would be.
		buf = append(buf[:0], p...)
		want, err := backend.DecodeEvent(buf)
		if err != nil {
			t.Fatal(err)
		}
		head, err := dec.DecodeHead(buf)
		if err != nil {
			t.Fatal(err)
		}
		if head.Head != want.Head || head.Origin != want.Origin {
			t.Fatalf("event %d: DecodeHead %+v %q, DecodeEvent %+v %q", i, head.Head, head.Origin, want.Head, want.Origin)
		}
		if i%97 == 0 {
			kept = append(kept, got{head, ev}) // the source, which aliases nothing
		}
		for j := range buf {
			buf[j] = 0xff
		}
	}
	for i, k := range kept {
		if k.e.Head != k.want.Head || k.e.Origin != k.want.Origin {
			t.Fatalf("kept event %d changed: %+v %q, want %+v %q", i, k.e.Head, k.e.Origin, k.want.Head, k.want.Origin)
		}
	}
}
