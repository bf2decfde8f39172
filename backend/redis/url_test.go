package redis_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/internal/redistest"
)

func TestOpenURLSentinel(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t)
	for _, u := range []string{
		"redis+sentinel://" + s.SentinelAddr() + "/0?master_name=" + s.MasterName(),
		// go-redis's own convention: a redis:// URL with master_name.
		"redis://" + s.SentinelAddr() + "?master_name=" + s.MasterName(),
	} {
		b, err := redis.OpenURL(u, nil)
		if err != nil {
			t.Fatalf("OpenURL(%q): %v", u, err)
		}
		defer b.Close()
		if _, ok := b.Client().(*goredis.Client); !ok {
			t.Errorf("OpenURL(%q) made a %T, want the *Client of NewFailoverClient", u, b.Client())
		}
		if err := useContext(t, b); err != nil {
			t.Fatalf("a backend from %q: %v", u, err)
		}
	}
}

func TestOpenURLCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	addrs := c.Addrs()
	u := "redis+cluster://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2] + "&dial_timeout=2s"
	b, err := redis.OpenURL(u, nil)
	if err != nil {
		t.Fatalf("OpenURL(%q): %v", u, err)
	}
	defer b.Close()
	cc, ok := b.Client().(*goredis.ClusterClient)
	if !ok {
		t.Fatalf("OpenURL(%q) made a %T, want *ClusterClient", u, b.Client())
	}
	if o := cc.Options(); len(o.Addrs) != 3 || o.DialTimeout != 2*time.Second || o.PipelinePoolSize >= 0 {
		t.Errorf("cluster options: addrs %v, dial timeout %v, pipeline pool %d; want 3 addrs, 2s and pipelines on the main pool (negative)", o.Addrs, o.DialTimeout, o.PipelinePoolSize)
	}
	if err := useContext(t, b); err != nil {
		t.Fatalf("a backend from %q: %v", u, err)
	}
}

func TestOpenURLOptions(t *testing.T) {
	b, err := redis.OpenURL("redis://localhost:6390/2?dial_timeout=7s&max_retries=5", &redis.Options{ReadTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	o := b.Client().(*goredis.Client).Options()
	if o.DB != 2 || o.DialTimeout != 7*time.Second || o.ReadTimeout != time.Second {
		t.Errorf("db %d, dial %v, read %v; want 2, 7s (URL), 1s (Options)", o.DB, o.DialTimeout, o.ReadTimeout)
	}
	if o.MaxRetries > 0 {
		t.Errorf("MaxRetries %d from a URL's max_retries=5; want no retries (a commit must not be resent)", o.MaxRetries)
	}
	if o.PipelinePoolSize >= 0 {
		t.Errorf("PipelinePoolSize %d; want pipelines on the main pool (negative)", o.PipelinePoolSize)
	}
	// A pipeline pool the URL asks for is kept.
	for _, q := range []string{"pipeline_pool_size=4", "pipeline_read_buffer_size=65536", "pipeline_write_buffer_size=65536"} {
		pb, err := redis.OpenURL("redis://localhost:6390/?"+q, nil)
		if err != nil {
			t.Fatal(err)
		}
		if o := pb.Client().(*goredis.Client).Options(); o.PipelinePoolSize < 0 {
			t.Errorf("%s: PipelinePoolSize %d; want the pipeline pool the URL asks for", q, o.PipelinePoolSize)
		}
		pb.Close()
	}
	sock, err := redis.OpenURL("unix:///tmp/redis.sock?db=3", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	if o := sock.Client().(*goredis.Client).Options(); o.Network != "unix" || o.DB != 3 {
		t.Errorf("unix URL: network %q db %d", o.Network, o.DB)
	}
}

func TestOpenURLBad(t *testing.T) {
	for _, u := range []string{
		"http://localhost",
		"memory:",
		"redis+sentinel://localhost:26379",                // no master_name
		"redis+nope://localhost",                          // unknown kind
		"unix+cluster:///tmp/x",                           // no such thing
		"redis://localhost/0?no_such_option=1",            // go-redis refuses it
		"redis+cluster://localhost?addr=nope",             // addr without port
		"redis://localhost/notanumber",                    // bad DB
		"redis://localhost:6379/0?master_name=m&db=x",     // bad DB in a Sentinel URL
		"redis://%zz",                                     // does not parse
		"rediss+sentinel://localhost?master_name=m&bad=1", // unknown option
	} {
		b, err := redis.OpenURL(u, nil)
		if err == nil {
			b.Close()
			t.Errorf("OpenURL(%q) succeeded", u)
			continue
		}
		if !errors.Is(err, redis.ErrBadURL) {
			t.Errorf("OpenURL(%q) = %v; want an error matching ErrBadURL", u, err)
		}
		if !strings.HasPrefix(err.Error(), "redis: ") {
			t.Errorf("OpenURL(%q) = %q; want it to start with \"redis: \"", u, err)
		}
	}
}
