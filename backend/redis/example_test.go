package redis_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
)

// Open connects with the original library's settings: redisHost, redisPort,
// redisDb; pubsubChannel is contextd.Options.Channel.
func ExampleOpen() {
	b, err := redis.Open(&redis.Options{Host: "localhost", Port: 6379, DB: 0})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	ctx := context.Background()
	users, err := contextd.New[map[string]string](b, "my_cxtd", &contextd.Options{Channel: "context_updates"})
	if err != nil {
		log.Fatal(err)
	}
	defer users.Close()
	if err := users.Initialize(ctx); err != nil {
		log.Fatal(err)
	}
	if err := users.UpdateContext(ctx, "user", map[string]string{"name": "John Doe"}); err != nil {
		log.Fatal(err)
	}
}

// OpenURL takes redis:// and rediss:// (TLS) URLs; the other options still
// apply.
func ExampleOpenURL() {
	b, err := redis.OpenURL("rediss://app:secret@redis.example.com:6380/0", &redis.Options{ChangeLogLength: 5000})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	fmt.Println("connected lazily; the first operation dials")
}

// Sentinel and Cluster URLs are told apart by their scheme; addr adds more
// Sentinels or seed nodes, and an unknown parameter is an error.
func ExampleOpenURL_sentinelAndCluster() {
	for _, u := range []string{
		"redis+sentinel://sentinel1:26379/0?master_name=mymaster&addr=sentinel2:26379",
		"redis+cluster://node1:6379?addr=node2:6379&addr=node3:6379",
		"redis+sentinel://sentinel1:26379", // no master_name
	} {
		b, err := redis.OpenURL(u, nil)
		if err != nil {
			fmt.Println(errors.Is(err, redis.ErrBadURL), err)
			continue
		}
		fmt.Printf("%T\n", b.Client())
		b.Close()
	}
	// Output:
	// *redis.Client
	// *redis.ClusterClient
	// true redis: bad URL: a Sentinel URL needs the master_name parameter
}

// New runs on a client the caller owns, here a Redis Cluster client; the
// client stays open when the Backend closes. Make it without retries and
// with ctx deadlines, as Open does.
func ExampleNew() {
	client := goredis.NewClusterClient(&goredis.ClusterOptions{
		Addrs:                 []string{"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"},
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
	})
	defer client.Close()
	b, err := redis.New(client, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
}

// With WaitReplicas, a write returns only once a replica has it, so it
// survives a Sentinel failover; otherwise it fails with ErrNotReplicated.
func ExampleOptions_waitReplicas() {
	client := goredis.NewFailoverClient(&goredis.FailoverOptions{
		MasterName:            "mymaster",
		SentinelAddrs:         []string{"10.0.0.1:26379"},
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
	})
	defer client.Close()
	b, err := redis.New(client, &redis.Options{WaitReplicas: 1, WaitTimeout: 500 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
}

// ExampleACLRules prints the ACL rules of a user that may use the context
// "billing" and nothing else (see docs/redis-acl.md).
func ExampleACLRules() {
	fmt.Println(strings.Join(redis.ACLRules("billing")[:5], " "))
	// Output: resetkeys resetchannels ~{contextd:billing}:* &{contextd:billing}:* -@all
}
