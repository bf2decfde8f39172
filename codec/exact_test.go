package codec_test

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/contextd-go/contextd/codec"
)

type (
	plainPoint struct{ X, Y int }
	allKinds   struct {
		B   bool
		I   int
		I8  int8
		I16 int16
		I32 int32
		I64 int64
		U   uint
		U8  uint8
		U16 uint16
		U32 uint32
		U64 uint64
		F32 float32
		F64 float64
		S   string `json:"s,omitempty"`
		A   [3]float64
		N   struct {
			D    time.Duration `json:"d"`
			Name string
			Bs   [2]byte
		}
	}
	celsius float64
	named   struct {
		T celsius `json:"t,omitempty"` // a float: omitempty would drop -0
	}
	withUnexported struct {
		X int
		y int //lint:ignore U1000 present to be refused
	}
	withDash struct {
		X, Y int `json:"-"`
	}
	withString struct {
		X int `json:",string"`
	}
	withPointer struct{ P *int }
	withSlice   struct{ S []int }
	withMap     struct{ M map[string]int }
	withAny     struct{ V any }
	embedded    struct{ plainPoint }
	caseClash   struct {
		Name string
		NAME string
	}
	tagClash struct {
		A int `json:"x"`
		B int `json:"X"` // only case differs
	}
	oddName struct {
		A int `json:"a-b"`
	}
	omitFloat struct {
		F float64 `json:",omitempty"`
	}
	omitZero struct {
		X int `json:",omitzero"`
	}
	valueMarsh struct{ X int }
	ptrMarsh   struct{ X int }
	textMarsh  int
	appender   uint8
	withNumber struct{ N json.Number }
	withTime   struct{ T time.Time }
	withUptr   struct{ U uintptr }
	withCplx   struct{ C complex128 }
)

func (valueMarsh) MarshalJSON() ([]byte, error) { return []byte(`1`), nil }
func (*ptrMarsh) UnmarshalJSON([]byte) error    { return nil }
func (textMarsh) MarshalText() ([]byte, error)  { return []byte("t"), nil }

func (appender) AppendText(b []byte) ([]byte, error) { return append(b, 'a'), nil }

func exactFor[T any](t *testing.T) func([]byte) bool {
	t.Helper()
	ex, ok := codec.JSON.(codec.Exact)
	if !ok {
		t.Fatal("codec.JSON does not implement codec.Exact")
	}
	return ex.Exact(reflect.TypeFor[T]())
}

// The JSON codec vouches only for types whose values it writes so that
// they decode bit for bit, and refuses every type that drops, transforms
// or shares part of a value.
func TestJSONExactTypes(t *testing.T) {
	for _, tc := range []struct {
		typ  reflect.Type
		want bool
	}{
		{reflect.TypeFor[int](), true},
		{reflect.TypeFor[string](), true},
		{reflect.TypeFor[float32](), true},
		{reflect.TypeFor[[4]bool](), true},
		{reflect.TypeFor[plainPoint](), true},
		{reflect.TypeFor[allKinds](), true},
		{reflect.TypeFor[celsius](), true},
		{reflect.TypeFor[time.Duration](), true},
		{reflect.TypeFor[named](), false},
		{reflect.TypeFor[withUnexported](), false},
		{reflect.TypeFor[withDash](), false},
		{reflect.TypeFor[withString](), false},
		{reflect.TypeFor[withPointer](), false},
		{reflect.TypeFor[withSlice](), false},
		{reflect.TypeFor[withMap](), false},
		{reflect.TypeFor[withAny](), false},
		{reflect.TypeFor[embedded](), false},
		{reflect.TypeFor[caseClash](), false},
		{reflect.TypeFor[tagClash](), false},
		{reflect.TypeFor[oddName](), false},
		{reflect.TypeFor[omitFloat](), false},
		{reflect.TypeFor[omitZero](), false},
		{reflect.TypeFor[valueMarsh](), false},
		{reflect.TypeFor[ptrMarsh](), false},
		{reflect.TypeFor[textMarsh](), false},
		{reflect.TypeFor[[2]textMarsh](), false},
		{reflect.TypeFor[appender](), false},
		{reflect.TypeFor[withNumber](), false},
		{reflect.TypeFor[json.Number](), false},
		{reflect.TypeFor[withTime](), false},
		{reflect.TypeFor[withUptr](), false},
		{reflect.TypeFor[withCplx](), false},
		{reflect.TypeFor[[]byte](), false},
		{reflect.TypeFor[*int](), false},
		{reflect.TypeFor[any](), false},
		{reflect.TypeFor[map[string]int](), false},
		{reflect.TypeFor[chan int](), false},
	} {
		got := codec.JSON.(codec.Exact).Exact(tc.typ) != nil
		if got != tc.want {
			t.Errorf("Exact(%v) vouches = %v, want %v", tc.typ, got, tc.want)
		}
	}
}

// A string with invalid UTF-8 does not round-trip (encoding/json replaces
// it by U+FFFD): the check refuses its encoding, and any that holds U+FFFD.
func TestJSONExactStrings(t *testing.T) {
	check := exactFor[allKinds](t)
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{"plain", true},
		{"<&> \u2028 \"quoted\" \\ \t\x00 é 世界 \U0001F600", true},
		{"\xff", false},
		{"a\xc3", false},
		{"\uFFFD", false},       // exact, but indistinguishable: decoded
		{`\ufffd`, false},       // the text, escaped as \\ufffd: decoded
		{`\u00e9 \uABCD`, true}, // other escapes are fine
	} {
		v := allKinds{S: tc.s}
		v.N.Name = tc.s
		b, err := codec.JSON.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := check(b); got != tc.want {
			t.Errorf("check(%q) = %v, want %v (encoded %s)", tc.s, got, tc.want, b)
		}
		if check(b) {
			assertRoundTrip(t, v, b)
		}
	}
}

// Every value the check accepts decodes bit for bit into what was encoded:
// random values, and the edges of every kind.
func TestJSONExactRoundTrip(t *testing.T) {
	check := exactFor[allKinds](t)
	rng := rand.New(rand.NewPCG(1, 2))
	edges := []allKinds{
		{},
		{I: math.MinInt, I64: math.MaxInt64, U: math.MaxUint, U64: math.MaxUint64, I8: math.MinInt8, U8: math.MaxUint8},
		{F32: math.SmallestNonzeroFloat32, F64: math.SmallestNonzeroFloat64, A: [3]float64{math.MaxFloat64, -math.MaxFloat64, math.Copysign(0, -1)}},
		{F32: float32(math.Copysign(0, -1)), F64: math.Copysign(0, -1)},
		{F32: math.MaxFloat32, F64: 1e21, A: [3]float64{1e-7, 123456789.123456789, 0.1}},
	}
	for i := range 5000 {
		var v allKinds
		if i < len(edges) {
			v = edges[i]
		} else {
			v = randomKinds(rng)
		}
		b, err := codec.JSON.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if !check(b) {
			t.Fatalf("check refused %s", b)
		}
		assertRoundTrip(t, v, b)
	}
}

func randomKinds(rng *rand.Rand) allKinds {
	f64 := func() float64 {
		for {
			if f := math.Float64frombits(rng.Uint64()); !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f
			}
		}
	}
	var v allKinds
	v.B = rng.IntN(2) == 1
	v.I, v.I8, v.I16, v.I32, v.I64 = int(rng.Uint64()), int8(rng.Uint64()), int16(rng.Uint64()), int32(rng.Uint64()), int64(rng.Uint64())
	v.U, v.U8, v.U16, v.U32, v.U64 = uint(rng.Uint64()), uint8(rng.Uint64()), uint16(rng.Uint64()), uint32(rng.Uint64()), rng.Uint64()
	for {
		if f := math.Float32frombits(rng.Uint32()); !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) {
			v.F32 = f
			break
		}
	}
	v.F64 = f64()
	v.A = [3]float64{f64(), f64(), float64(rng.IntN(1000)) / 10}
	v.N.D = time.Duration(rng.Int64())
	var sb strings.Builder
	for range rng.IntN(8) {
		sb.WriteRune(rune(rng.IntN(0x10FFFF)))
	}
	v.S = strings.ToValidUTF8(sb.String(), "x")
	v.S = strings.ReplaceAll(v.S, "\uFFFD", "y")
	v.N.Name = v.S
	v.N.Bs = [2]byte{byte(rng.Uint32()), byte(rng.Uint32())}
	return v
}

// assertRoundTrip decodes b and compares it with v bit for bit (floats by
// their bits, so -0 and +0 differ).
func assertRoundTrip[T any](t *testing.T, v T, b []byte) {
	t.Helper()
	var got T
	if err := codec.JSON.Unmarshal(b, &got); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if !bitsEqual(reflect.ValueOf(v), reflect.ValueOf(got)) {
		t.Fatalf("round trip of %s:\n got %#v\nwant %#v", b, got, v)
	}
}

func bitsEqual(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Float32, reflect.Float64:
		return math.Float64bits(a.Float()) == math.Float64bits(b.Float())
	case reflect.Array:
		for i := range a.Len() {
			if !bitsEqual(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Struct:
		for i := range a.NumField() {
			if !bitsEqual(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	}
	return a.Equal(b)
}

// FuzzJSONExact: whatever strings and floats a value holds, when the check
// accepts its encoding the value decodes bit for bit.
func FuzzJSONExact(f *testing.F) {
	f.Add("x", 1.5, uint64(7))
	f.Add("\xff\xfe", math.Copysign(0, -1), uint64(math.MaxUint64))
	f.Add(`\ufffd "<>"`, 1e300, uint64(0))
	check := codec.JSON.(codec.Exact).Exact(reflect.TypeFor[allKinds]())
	f.Fuzz(func(t *testing.T, s string, x float64, u uint64) {
		v := allKinds{S: s, F64: x, U64: u, F32: float32(x)}
		v.N.Name = s + s
		b, err := codec.JSON.Marshal(v)
		if err != nil {
			return // NaN, ±Inf
		}
		if check(b) {
			assertRoundTrip(t, v, b)
		}
	})
}
