package backend

// DefaultChannel is the channel a context's events go to unless its options
// name another. The braces are a Redis Cluster hash tag: the channel lands
// on the same shard as the context's keys, which sharded pub/sub needs.
func DefaultChannel(name string) string {
	return "{contextd:" + name + "}:events"
}
