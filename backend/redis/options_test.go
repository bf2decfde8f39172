package redis_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

func TestOpenDefaults(t *testing.T) {
	b, err := redis.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	o := b.Client().(*goredis.Client).Options()
	if o.Addr != "localhost:6379" || o.DB != 0 {
		t.Fatalf("Open(nil) connects to %s db %d, want the original's localhost:6379 db 0", o.Addr, o.DB)
	}
	if o.PipelinePoolSize >= 0 {
		t.Errorf("PipelinePoolSize %d; want pipelines on the main pool (negative)", o.PipelinePoolSize)
	}
	if _, err := redis.Open(&redis.Options{Port: 70000}); err == nil {
		t.Error("Open with port 70000 succeeded")
	}
	if _, err := redis.Open(&redis.Options{DB: -1}); err == nil {
		t.Error("Open with DB -1 succeeded")
	}
	if _, err := redis.New(nil, nil); err == nil {
		t.Error("New(nil) succeeded")
	}
}

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return host, p
}

// useContext checks a backend really works: a Context initializes (a
// subscription included) and writes.
func useContext(t *testing.T, b *redis.Backend) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cx, err := contextd.New[int](b, "auth", nil)
	if err != nil {
		return err
	}
	defer cx.Close()
	if err := cx.Initialize(ctx); err != nil {
		return err
	}
	return cx.UpdateContext(ctx, "k", 1)
}

func TestPasswordAndACL(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, &redistest.Options{Password: "s3cret", Users: []redistest.User{{Name: "app", Password: "app-pw"}}})
	host, port := hostPort(t, srv.Addr())
	cases := []struct {
		name string
		opts redis.Options
		ok   bool
	}{
		{"password", redis.Options{Host: host, Port: port, Password: "s3cret"}, true},
		{"acl user", redis.Options{Host: host, Port: port, Username: "app", Password: "app-pw"}, true},
		{"wrong password", redis.Options{Host: host, Port: port, Password: "nope"}, false},
		{"no password", redis.Options{Host: host, Port: port}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := redis.Open(&tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			err = useContext(t, b)
			if tc.ok && err != nil {
				t.Fatalf("authenticated use failed: %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(strings.ToLower(err.Error()), "auth") && !strings.Contains(err.Error(), "WRONGPASS")) {
				t.Fatalf("unauthenticated use = %v, want an authentication error", err)
			}
		})
	}
}

func TestOpenURL(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, &redistest.Options{Users: []redistest.User{{Name: "app", Password: "app-pw"}}})
	b, err := redis.OpenURL(fmt.Sprintf("redis://app:app-pw@%s/0", srv.Addr()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := useContext(t, b); err != nil {
		t.Fatalf("a backend from a redis:// URL: %v", err)
	}
	secure, err := redis.OpenURL("rediss://localhost:6380/1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer secure.Close()
	if o := secure.Client().(*goredis.Client).Options(); o.TLSConfig == nil || o.DB != 1 {
		t.Errorf("rediss:// URL gave TLS %v, DB %d", o.TLSConfig != nil, o.DB)
	}
	if _, err := redis.OpenURL("http://nope", nil); err == nil {
		t.Error("OpenURL of an http URL succeeded")
	}
}

func TestCloseLeavesCallersClientOpen(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer client.Close()
	b, err := redis.New(client, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := client.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("the caller's client was closed by Backend.Close: %v", err)
	}
	owned, _ := redis.Open(&redis.Options{Host: "127.0.0.1", Port: srv.Port()})
	if err := owned.Close(); err != nil {
		t.Fatal(err)
	}
	if err := owned.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := owned.Client().Ping(context.Background()).Err(); !errors.Is(err, goredis.ErrClosed) {
		t.Fatalf("Open's own client still usable after Close: %v", err)
	}
}

// TestTLS runs a Context over TLS to a redis-server with a certificate made
// for the test.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsPort := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	redistest.Start(t, &redistest.Options{Args: []string{
		"--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", certFile, "--tls-auth-clients", "no",
	}})
	b, err := redis.Open(&redis.Options{Host: "127.0.0.1", Port: tlsPort, TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := useContext(t, b); err != nil {
		t.Fatalf("Context over TLS: %v", err)
	}
	plain, _ := redis.Open(&redis.Options{Host: "127.0.0.1", Port: tlsPort, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer plain.Close()
	if err := useContext(t, plain); err == nil {
		t.Fatal("a plain connection to the TLS port worked")
	}
}

func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestMayResendFollowsConfiguration checks how a Backend decides whether
// its client may resend a commit (and so whether commits must remember
// their heads): from what Open configured, and for New from the client's
// options as go-redis normalised them (MaxRetries -1 becomes 0, 0 becomes
// 3; MaxRedirects likewise).
//
// Regression: the check was MaxRetries >= 0 on the normalised options,
// true for every client, so every commit also ran a GET and a SET PX 60000
// of a :commit:<id> key.
func TestMayResendFollowsConfiguration(t *testing.T) {
	opened, err := redis.Open(&redis.Options{Host: "127.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	if redis.MayResend(opened) {
		t.Error("a Backend made by Open (MaxRetries -1) remembers commits for resends")
	}
	for _, c := range []struct {
		name   string
		client goredis.UniversalClient
		want   bool
	}{
		{"Client MaxRetries -1", goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}), false},
		{"Client default (3 retries)", goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"}), true},
		{"Client MaxRetries 1", goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: 1}), true},
		{"failover Client MaxRetries -1", goredis.NewFailoverClient(&goredis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}, MaxRetries: -1}), false},
		{"ClusterClient MaxRedirects -1", goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, MaxRedirects: -1}), false},
		{"ClusterClient default (3 redirects)", goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}}), true},
		{"ClusterClient MaxRedirects -1, MaxRetries 2", goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, MaxRedirects: -1, MaxRetries: 2}), true},
	} {
		b, err := redis.New(c.client, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := redis.MayResend(b); got != c.want {
			t.Errorf("%s: remembers commits for resends = %v, want %v", c.name, got, c.want)
		}
		_ = c.client.Close()
	}
}
