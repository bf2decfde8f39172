package codec_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/codec"
)

// A differential test of the direct encoder (jsonfast.go) against
// encoding/json over randomly built types (reflect.StructOf, ArrayOf) and
// values chosen near every edge encoding/json has: float format
// thresholds, float32, -0, NaN and infinities (errors), HTML characters,
// U+2028/9, control characters, invalid and truncated UTF-8, field tags.

type (
	revStr   string
	revInt   int16
	revUint  uint32
	revFloat float32
	revBool  bool
)

// revLeaves are the leaf types the generator picks from: every kind Exact
// allows, named ones, and some it must refuse (which must still encode as
// encoding/json does, through it).
var revLeaves = []reflect.Type{
	reflect.TypeFor[bool](), reflect.TypeFor[revBool](),
	reflect.TypeFor[int](), reflect.TypeFor[int8](), reflect.TypeFor[int16](), reflect.TypeFor[int32](), reflect.TypeFor[int64](), reflect.TypeFor[revInt](),
	reflect.TypeFor[uint](), reflect.TypeFor[uint8](), reflect.TypeFor[uint16](), reflect.TypeFor[uint32](), reflect.TypeFor[uint64](), reflect.TypeFor[revUint](),
	reflect.TypeFor[float32](), reflect.TypeFor[float64](), reflect.TypeFor[revFloat](), reflect.TypeFor[celsius](),
	reflect.TypeFor[string](), reflect.TypeFor[revStr](), reflect.TypeFor[time.Duration](),
	// refused by Exact
	reflect.TypeFor[uintptr](), reflect.TypeFor[textMarsh](), reflect.TypeFor[valueMarsh](), reflect.TypeFor[ptrMarsh](),
	reflect.TypeFor[appender](), reflect.TypeFor[json.Number](), reflect.TypeFor[time.Time](), reflect.TypeFor[[]byte](),
	reflect.TypeFor[*int](), reflect.TypeFor[map[string]int](), reflect.TypeFor[any](),
}

var revTags = []string{
	"", "", "", `json:"x"`, `json:"X"`, `json:"name"`, `json:",omitempty"`, `json:"o,omitempty"`, `json:"-"`, `json:"-,"`,
	`json:",string"`, `json:",omitzero"`, `json:"a-b"`, `json:"é"`, `json:""`, `json:"name,omitempty,string"`, `json:"q" xml:"r"`,
	`json:"<&>"`, `json:"F1"`, `json:"f2,omitempty"`,
}

func revType(rng *rand.Rand, depth int) reflect.Type {
	if depth > 3 || rng.IntN(3) == 0 {
		return revLeaves[rng.IntN(len(revLeaves))]
	}
	if rng.IntN(3) == 0 {
		return reflect.ArrayOf(rng.IntN(4), revType(rng, depth+1))
	}
	n := rng.IntN(5)
	fields := make([]reflect.StructField, n)
	for i := range fields {
		fields[i] = reflect.StructField{
			Name: fmt.Sprintf("F%d", i),
			Type: revType(rng, depth+1),
			Tag:  reflect.StructTag(revTags[rng.IntN(len(revTags))]),
		}
	}
	return reflect.StructOf(fields)
}

var revStrings = []string{
	"", "a", "<>&", "\u2028\u2029", "\u2027\u202a\u202f", "\x7f", "\x00\x01\x1f", "\b\f\n\r\t", `"\`, "\ufffd", `\ufffd`, `\uFFFD`,
	"\xff", "\xe2\x80", "\xe2\x80\xa8", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "é✓😀", "\U0010ffff", "a\xffb", "\xf0\x9f\x98",
}

var revFloats = []float64{
	0, math.Copysign(0, -1), 1, -1, 0.1, 1e-6, 1e-7, 1e21, 1e20, math.Nextafter(1e21, 0), math.Nextafter(1e-6, 0), math.Nextafter(1e-6, 1),
	float64(math.Nextafter32(1e21, 0)), float64(math.Nextafter32(1e-6, 0)), float64(float32(1e21)), float64(float32(1e-6)),
	math.MaxFloat64, math.SmallestNonzeroFloat64, math.MaxFloat32, math.SmallestNonzeroFloat32, 1e-320, 123456789e-15, 5e-7, 9.999999e20,
	math.NaN(), math.Inf(1), math.Inf(-1), 1e300, 3.4e39,
}

func revFill(rng *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		switch rng.IntN(3) {
		case 0:
			v.SetInt(0)
		case 1:
			v.SetInt(int64(rng.IntN(200)) - 100)
		default:
			v.SetInt(int64(rng.Uint64())) // wraps to the kind's size
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if rng.IntN(3) == 0 {
			v.SetUint(0)
		} else {
			v.SetUint(rng.Uint64())
		}
	case reflect.Float32, reflect.Float64:
		var f float64
		switch rng.IntN(4) {
		case 0, 1:
			f = revFloats[rng.IntN(len(revFloats))]
		case 2:
			f = math.Float64frombits(rng.Uint64())
		default:
			f = float64(math.Float32frombits(rng.Uint32()))
		}
		if rng.IntN(20) != 0 && (math.IsNaN(f) || math.IsInf(f, 0)) {
			f = 2.5 // errors only now and then: they end the comparison
		}
		if v.Kind() == reflect.Float32 && rng.IntN(20) != 0 && math.Abs(f) > math.MaxFloat32 {
			f = 1.5
		}
		v.SetFloat(f)
	case reflect.String:
		var sb strings.Builder
		for range rng.IntN(4) {
			switch rng.IntN(3) {
			case 0:
				sb.WriteString(revStrings[rng.IntN(len(revStrings))])
			case 1:
				sb.WriteByte(byte(rng.Uint32()))
			default:
				sb.WriteRune(rune(rng.IntN(0x110000)))
			}
		}
		v.SetString(sb.String())
	case reflect.Array:
		for i := range v.Len() {
			revFill(rng, v.Index(i))
		}
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Unix(rng.Int64N(1<<40), rng.Int64N(1e9)).UTC()))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				revFill(rng, v.Field(i))
			}
		}
	}
}

// revCheck compares codec.JSON with json.Marshal for v and &v, and, where
// Exact vouches for the type and the encoding, that the bytes decode to a
// value that encodes the same (so bit for bit, -0 included).
func revCheck(t *testing.T, v reflect.Value) {
	t.Helper()
	p := reflect.New(v.Type())
	p.Elem().Set(v)
	for _, x := range []any{v.Interface(), p.Interface()} {
		want, werr := json.Marshal(x)
		got, err := codec.JSON.Marshal(x)
		if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("type %v: codec.JSON.Marshal(%#v)\n = %q, %v\nencoding/json: %q, %v", reflect.TypeOf(x), x, got, err, want, werr)
		}
		if err != nil {
			return
		}
	}
	if ex := codec.JSON.(codec.Exact).Exact(v.Type()); ex != nil {
		b, _ := codec.JSON.Marshal(v.Interface())
		if ex(b) {
			back := reflect.New(v.Type())
			if err := codec.JSON.Unmarshal(b, back.Interface()); err != nil {
				t.Fatalf("type %v: %q does not decode: %v", v.Type(), b, err)
			}
			b2, _ := json.Marshal(back.Elem().Interface())
			if !bytes.Equal(b, b2) {
				t.Fatalf("type %v: Exact vouched for %q, which decodes to a value encoded as %q", v.Type(), b, b2)
			}
		}
	}
}

func TestJSONFastRandomTypes(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	exact := 0
	for range 3000 {
		typ := revType(rng, 0)
		if codec.JSON.(codec.Exact).Exact(typ) != nil {
			exact++
		}
		for range 5 {
			v := reflect.New(typ).Elem()
			revFill(rng, v)
			revCheck(t, v)
		}
	}
	t.Logf("%d of 3000 types exact", exact)
}

func FuzzJSONFastTypes(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	f.Fuzz(func(t *testing.T, a, b uint64) {
		rng := rand.New(rand.NewPCG(a, b))
		typ := revType(rng, 0)
		v := reflect.New(typ).Elem()
		revFill(rng, v)
		revCheck(t, v)
	})
}

// Many goroutines encoding many types at once share the plan cache and
// the last-plan pointer: every result must still be encoding/json's
// (run with -race).
func TestJSONFastConcurrentTypes(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	var vals []reflect.Value
	for len(vals) < 64 {
		typ := revType(rng, 0)
		v := reflect.New(typ).Elem()
		revFill(rng, v)
		if _, err := json.Marshal(v.Interface()); err == nil {
			vals = append(vals, v)
		}
	}
	want := make([][]byte, len(vals))
	for i, v := range vals {
		want[i], _ = json.Marshal(v.Interface())
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for n := range 2000 {
				i := (g*7 + n*13) % len(vals)
				got, err := codec.JSON.Marshal(vals[i].Interface())
				if err != nil || !bytes.Equal(got, want[i]) {
					select {
					case errs <- fmt.Sprintf("type %v: %q, %v; want %q", vals[i].Type(), got, err, want[i]):
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// Invalid UTF-8 must come out as encoding/json writes it: as the escape
// \ufffd by default, as raw U+FFFD when encoding/json is backed by v2
// (GOEXPERIMENT=jsonv2).
func TestJSONFastInvalidUTF8(t *testing.T) {
	for _, s := range []string{"\xff", "a\xc0\xafb", "\xe2\x80", "\xed\xa0\x80", "<\xff>"} {
		sameAsJSON(t, s)
		sameAsJSON(t, struct{ S [1]string }{[1]string{s}})
	}
}

// A named pointer type encodes as its pointee.
func TestJSONFastNamedPointer(t *testing.T) {
	type pp *plainPoint
	sameAsJSON(t, pp(&plainPoint{1, 2}))
	sameAsJSON(t, pp(nil))
}

// A small value written after a large one of the same type must not come
// back in a buffer the size of the large one: json.Marshal returns a
// buffer of about its length, and the caller may keep what it gets (a
// store, a queue of pending writes), or at least pays for allocating and
// zeroing the whole capacity on every such write.
func TestJSONFastSmallAfterLargeCapacity(t *testing.T) {
	type doc struct{ S string }
	if _, err := codec.JSON.Marshal(doc{S: strings.Repeat("x", 1<<20)}); err != nil {
		t.Fatal(err)
	}
	b, err := codec.JSON.Marshal(doc{S: "y"})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(doc{S: "y"})
	if cap(b) > 4096 {
		t.Fatalf("Marshal of a %d-byte encoding returned a buffer of capacity %d (json.Marshal: %d)", len(b), cap(b), cap(want))
	}
}

// BenchmarkJSONFastVsMarshal compares codec.JSON with json.Marshal on a
// larger exact struct, a string with escapes, a type the fast path
// refuses (its cost there is pure overhead), two types alternating (the
// last-plan cache misses every time), and in parallel.
func BenchmarkJSONFastVsMarshal(b *testing.B) {
	kinds := randomKinds(rand.New(rand.NewPCG(1, 2)))
	str := struct{ S string }{strings.Repeat("abc<def>\u00e9", 10)}
	refused := map[string]int{"a": 1, "b": 2}
	alt := []any{plainPoint{1, 2}, kinds}
	pt := plainPoint{1, 2} // and &pt: contextd encodes a T in Update, a *T in Set
	type user struct {
		ID     int64  `json:"id"`
		Name   string `json:"name"`
		Email  string `json:"email,omitempty"`
		Count  int    `json:"count"`
		Active bool   `json:"active"`
		Score  float64
	}
	typical := user{ID: 123456, Name: "Ada Lovelace", Email: "ada@example.com", Count: 42, Active: true, Score: 97.5}
	for _, bc := range []struct {
		name string
		vals []any
	}{{"point", []any{pt}}, {"point-and-ptr", []any{pt, &pt}}, {"typical", []any{typical}}, {"allKinds", []any{kinds}}, {"string", []any{str}}, {"refused-map", []any{refused}}, {"alternating", alt}} {
		for _, impl := range []struct {
			name string
			f    func(any) ([]byte, error)
		}{{"encoding-json", json.Marshal}, {"codec", codec.JSON.Marshal}} {
			b.Run(bc.name+"/"+impl.name, func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, err := impl.f(bc.vals[i%len(bc.vals)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run(bc.name+"/"+impl.name+"/parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						if _, err := impl.f(bc.vals[i%len(bc.vals)]); err != nil {
							b.Error(err)
							return
						}
						i++
					}
				})
			})
		}
	}
}

// BenchmarkJSONFastMixedSizes writes values of one type whose encodings
// alternate between 64 KiB and a few bytes: each small one starts from
// the capacity of the large one before it.
func BenchmarkJSONFastMixedSizes(b *testing.B) {
	type doc struct{ S string }
	large := doc{S: strings.Repeat("x", 64<<10)}
	for _, impl := range []struct {
		name string
		f    func(any) ([]byte, error)
	}{{"encoding-json", json.Marshal}, {"codec", codec.JSON.Marshal}} {
		for _, mix := range []struct {
			name string
			vals []any
		}{{"mixed", []any{large, doc{S: "y"}, doc{S: "z"}, doc{S: "w"}}}, {"large", []any{large}}, {"4KiB", []any{doc{S: strings.Repeat("x", 4<<10)}}}} {
			vals := mix.vals
			b.Run(mix.name+"/"+impl.name, func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, err := impl.f(vals[i%len(vals)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}
