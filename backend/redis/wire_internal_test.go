package redis

import (
	"context"
	"encoding/binary"
	"strconv"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/internal/redistest"
)

// TestLuaUvarint checks the commit script's uvarint against
// encoding/binary at the boundaries of each of its paths (one, two and
// three bytes without a table, longer with one): the script builds events
// byte for byte as backend.EncodeEvent does.
func TestLuaUvarint(t *testing.T) {
	srv := redistest.Start(t, nil)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer client.Close()
	values := []uint64{0, 1, 127, 128, 129, 255, 16383, 16384, 16385, 2097151, 2097152, 2097153, 268435455, 268435456, 1 << 40}
	args := make([]any, len(values))
	for i, v := range values {
		args[i] = strconv.FormatUint(v, 10)
	}
	script := luaWire + `
local out = {}
for i = 1, #ARGV do out[i] = uvarint(tonumber(ARGV[i])) end
return out`
	res, err := client.Eval(context.Background(), script, nil, args...).StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range values {
		if want := string(binary.AppendUvarint(nil, v)); res[i] != want {
			t.Errorf("uvarint(%d) = % x, want % x", v, res[i], want)
		}
	}
	// wireID, which converts a head written by an older version.
	ids := []any{"", "0123456789abcdef", "abc", "ABCD", "c7-x", "00"}
	got, err := client.Eval(context.Background(), luaWire+`
local out = {}
for i = 1, #ARGV do out[i] = wireID(ARGV[i]) end
return out`, nil, ids...).StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if want := string(backend.AppendWireID(nil, id.(string))); got[i] != want {
			t.Errorf("wireID(%q) = % x, want % x", id, got[i], want)
		}
	}
}
