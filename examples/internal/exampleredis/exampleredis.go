// Package exampleredis opens the Redis backend for the examples from a
// "host:port" address.
package exampleredis

import (
	"fmt"
	"net"
	"strconv"

	"github.com/contextd-go/contextd/backend/redis"
)

// Open returns a Redis backend for addr ("host:port") and a function that
// closes it.
func Open(addr string) (*redis.Backend, func(), error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("-redis %q: want host:port: %w", addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, nil, fmt.Errorf("-redis %q: bad port: %w", addr, err)
	}
	b, err := redis.Open(&redis.Options{Host: host, Port: port})
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = b.Close() }, nil
}
