package codec_test

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/contextd-go/contextd/codec"
)

// The direct encoder of exact types (jsonfast.go) must write what
// encoding/json writes, byte for byte.

type fastOmit struct {
	B  bool       `json:"b,omitempty"`
	I  int        `json:",omitempty"`
	U  uint8      `json:"u,omitempty"`
	S  string     `json:"s,omitempty"`
	A  [2]int     `json:"a,omitempty"`
	Z  [0]int     `json:"z,omitempty"`
	St plainPoint `json:"st,omitempty"`
	D  time.Duration
}

// sameAsJSON fails t unless codec.JSON writes v, and a pointer to it, as
// json.Marshal does (or both fail).
func sameAsJSON[T any](t *testing.T, v T) {
	t.Helper()
	want, werr := json.Marshal(v)
	for _, x := range []any{v, &v} {
		got, err := codec.JSON.Marshal(x)
		if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("Marshal(%T %+v) = %q, %v; encoding/json: %q, %v", x, v, got, err, want, werr)
		}
	}
}

func TestJSONFastMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		sameAsJSON(t, randomKinds(rng))
	}
	sameAsJSON(t, allKinds{})
	sameAsJSON(t, allKinds{F32: float32(math.Copysign(0, -1)), F64: math.Copysign(0, -1)})
	for _, f := range []float64{1e-6, 1e-7, 9.999999e-7, 1e20, 1e21, 123456789e13, 5e-324, math.MaxFloat64, 0.1, 1e-9, 2.5e-10, -1e-100} {
		sameAsJSON(t, f)
		sameAsJSON(t, float32(f))
		sameAsJSON(t, [1]float64{-f})
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		sameAsJSON(t, f)
		sameAsJSON(t, allKinds{F64: f})
	}
	var every strings.Builder
	for c := range 0x80 {
		every.WriteByte(byte(c))
	}
	for _, s := range []string{"", every.String(), "<a href=\"x\">&amp;</a>", "\u2028\u2029\u2027\u202a", "\xff\xfe\xc3", "é✓😀\x7f", "\ufffd", `\ufffd`, "a\x00b\x1fc"} {
		sameAsJSON(t, s)
		sameAsJSON(t, allKinds{S: s})
	}
	sameAsJSON(t, fastOmit{})
	sameAsJSON(t, fastOmit{B: true, I: -1, U: 1, S: "x", A: [2]int{}, D: time.Second})
	sameAsJSON(t, plainPoint{1, 2})
	sameAsJSON(t, true)
	sameAsJSON(t, uint64(math.MaxUint64))
	// Types Exact refuses still go to encoding/json.
	sameAsJSON(t, withSlice{S: []int{1}})
	sameAsJSON(t, valueMarsh{X: 1})
	sameAsJSON(t, ptrMarsh{X: 1})
	sameAsJSON(t, withDash{X: 1, Y: 2})
	var nilPoint *plainPoint
	sameAsJSON(t, nilPoint)
}

func FuzzJSONFast(f *testing.F) {
	f.Add("x", 1.5, uint64(7), int64(-3))
	f.Add("\xff\xfe<>&\u2028", math.Copysign(0, -1), uint64(math.MaxUint64), int64(math.MinInt64))
	f.Add(`\ufffd "\b\f"`, 1e300, uint64(0), int64(0))
	f.Fuzz(func(t *testing.T, s string, x float64, u uint64, i int64) {
		v := allKinds{S: s, F64: x, U64: u, F32: float32(x), I64: i, I8: int8(i)}
		v.N.Name = s + s
		v.A = [3]float64{x / 3, x * 1e-10, -x}
		sameAsJSON(t, v)
		sameAsJSON(t, fastOmit{S: s, I: int(i)})
	})
}

// BenchmarkJSONMarshal compares the direct encoder (codec.JSON) with
// json.Marshal on a small struct.
func BenchmarkJSONMarshal(b *testing.B) {
	v := plainPoint{1, 2}
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("codec", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := codec.JSON.Marshal(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
