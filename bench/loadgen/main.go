// loadgen: a compiled closed-loop load generator for one agent call over gRPC or REST, so that a
// benchmark's latency is the server's and not the harness's (a Python generator on the same two
// cores spends ~0.8 ms of CPU per call and adds its own GIL waits to every latency it measures).
//
// Each of -concurrency goroutines owns one connection (an HTTP/1.1 keep-alive connection, or a gRPC
// channel of its own, as each agent process has) and sends the same request body in a closed loop
// with a fresh idempotency key per call, as an agent does. The body is sent as it is: serialized
// protobuf for gRPC (a codec that passes bytes through, so no generated code is needed), JSON for
// REST. After -seconds it prints one JSON line: requests, warmup (calls before the clock), errors,
// seconds, cpu_seconds, p50_ms, p99_ms. Run by bench/grpc_vs_rest.py (the default generator);
// bench/_loadgen.py builds it from Debian's golang-go and golang-google-grpc-dev, in GOPATH mode,
// with no module download.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
)

// rawCodec sends and receives messages as the bytes they already are.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" } // the content type the server expects

var _ encoding.Codec = rawCodec{}

type caller interface {
	call(key string) error
	close()
}

type grpcCaller struct {
	conn   *grpc.ClientConn
	method string
	token  string
	body   []byte
}

func (c *grpcCaller) call(key string) error {
	ctx := metadata.AppendToOutgoingContext(context.Background(),
		"authorization", "Bearer "+c.token, "idempotency-key", key)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var reply []byte
	return c.conn.Invoke(ctx, c.method, &c.body, &reply, grpc.ForceCodec(rawCodec{}))
}

func (c *grpcCaller) close() { c.conn.Close() }

type httpCaller struct {
	client *http.Client
	url    string
	token  string
	body   []byte
}

func (c *httpCaller) call(key string) error {
	request, err := http.NewRequest("POST", c.url, bytes.NewReader(c.body))
	if err != nil {
		return err
	}
	request.Header.Set("Authorization", "Bearer "+c.token)
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("Accept", "application/json")
	request.Header.Set("Idempotency-Key", key)
	response, err := c.client.Do(request)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	if _, err := io.Copy(io.Discard, response.Body); err != nil {
		return err
	}
	if response.StatusCode >= 300 {
		return fmt.Errorf("HTTP %d", response.StatusCode)
	}
	return nil
}

func (c *httpCaller) close() { c.client.CloseIdleConnections() }

func connect(transport, target, method, path, token string, body []byte) (caller, error) {
	if transport == "grpc" {
		conn, err := grpc.Dial(target, grpc.WithInsecure(), grpc.WithBlock())
		if err != nil {
			return nil, err
		}
		return &grpcCaller{conn: conn, method: method, token: token, body: body}, nil
	}
	// One keep-alive connection of its own per caller, no HTTP/2, no proxy.
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: dialer.DialContext, MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true,
	}}
	return &httpCaller{client: client, url: target + path, token: token, body: body}, nil
}

func main() {
	transport := flag.String("transport", "grpc", "grpc or http")
	target := flag.String("target", "", "host:port for gRPC, http://host:port for REST")
	method := flag.String("method", "/modeloman.v1.ControlPlane/Admit", "gRPC method")
	path := flag.String("path", "/api/v1/admissions", "REST path")
	token := flag.String("token", "", "the agent's key")
	bodyFile := flag.String("body", "", "file holding the request body (protobuf for gRPC, JSON for REST)")
	concurrency := flag.Int("concurrency", 8, "callers, each with its own connection")
	seconds := flag.Float64("seconds", 5, "how long to call")
	keyPrefix := flag.String("key-prefix", "", "idempotency keys are <prefix>-<caller>-<n>")
	flag.Parse()

	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		fail(err)
	}
	if *keyPrefix == "" {
		*keyPrefix = fmt.Sprintf("loadgen-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	callers := make([]caller, *concurrency)
	for i := range callers {
		if callers[i], err = connect(*transport, *target, *method, *path, *token, body); err != nil {
			fail(err)
		}
		// One call first: the connection is up before the clock starts.
		if err := callers[i].call(fmt.Sprintf("%s-%d-warm", *keyPrefix, i)); err != nil {
			fail(fmt.Errorf("first call: %w", err))
		}
	}

	latencies := make([][]time.Duration, *concurrency)
	errors := make([]int, *concurrency)
	var stop sync.WaitGroup
	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	cpuBegan := cpuSeconds()
	began := time.Now()
	for i := range callers {
		stop.Add(1)
		go func(i int) {
			defer stop.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				start := time.Now()
				if err := callers[i].call(fmt.Sprintf("%s-%d-%d", *keyPrefix, i, n)); err != nil {
					errors[i]++
				}
				latencies[i] = append(latencies[i], time.Since(start))
			}
		}(i)
	}
	stop.Wait()
	elapsed := time.Since(began).Seconds()
	cpu := cpuSeconds() - cpuBegan
	for _, c := range callers {
		c.close()
	}

	var all []time.Duration
	errorCount := 0
	for i := range latencies {
		all = append(all, latencies[i]...)
		errorCount += errors[i]
	}
	if len(all) == 0 {
		fail(fmt.Errorf("no calls in %g s", *seconds))
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	p99 := int(float64(len(all)) * 0.99)
	if p99 >= len(all) {
		p99 = len(all) - 1
	}
	out, _ := json.Marshal(map[string]interface{}{
		"requests": len(all), "warmup": len(callers), "errors": errorCount, "seconds": elapsed, "cpu_seconds": cpu,
		"p50_ms": float64(all[len(all)/2]) / 1e6, "p99_ms": float64(all[p99]) / 1e6,
	})
	fmt.Println(string(out))
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "loadgen:", err)
	os.Exit(1)
}
