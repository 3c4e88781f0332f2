package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

var discard = slog.New(slog.DiscardHandler)

// TestServeGracefulShutdown checks that shutting down, by ctx or by
// SIGTERM, stops accepting connections but lets the running generation
// finish and its client get the response.
func TestServeGracefulShutdown(t *testing.T) {
	for _, trigger := range []string{"ctx", "SIGTERM"} {
		t.Run(trigger, func(t *testing.T) {
			fn, started, release := blocking()
			h := New(&fakeGen{fn: fn}, Options{Logger: discard})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			served := make(chan error, 1)
			go func() { served <- Serve(ctx, ln, h, ServeOptions{Logger: discard, ShutdownTimeout: 10 * time.Second}) }()

			url := "http://" + ln.Addr().String() + "/v1/generate"
			type reply struct {
				status int
				body   string
				err    error
			}
			replied := make(chan reply, 1)
			go func() {
				resp, err := http.Post(url, "application/json", strings.NewReader(goodBody(t)))
				if err != nil {
					replied <- reply{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				replied <- reply{resp.StatusCode, string(b), err}
			}()
			<-started // Serve is serving, so its signal handler is installed
			if trigger == "ctx" {
				cancel()
			} else if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}

			// No new connections once shutdown began...
			deadline := time.Now().Add(5 * time.Second)
			for {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					break
				}
				c.Close()
				if time.Now().After(deadline) {
					t.Fatal("still accepting connections during shutdown")
				}
				time.Sleep(5 * time.Millisecond)
			}
			// ...but the request in flight is not cut off.
			select {
			case err := <-served:
				t.Fatalf("Serve returned (%v) with a request in flight", err)
			case r := <-replied:
				t.Fatalf("request ended before the generation: %+v", r)
			case <-time.After(50 * time.Millisecond):
			}
			close(release)
			if r := <-replied; r.err != nil || r.status != 200 || !strings.Contains(r.body, `"request_id"`) {
				t.Errorf("in-flight request: %+v", r)
			}
			select {
			case err := <-served:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return after the request finished")
			}
		})
	}
}

func TestServeShutdownTimeout(t *testing.T) {
	fn, started, release := blocking()
	defer close(release)
	h := New(&fakeGen{fn: fn}, Options{Logger: discard})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, ln, h, ServeOptions{Logger: discard, ShutdownTimeout: 20 * time.Millisecond})
	}()
	go func() {
		if resp, err := http.Post("http://"+ln.Addr().String()+"/v1/generate", "application/json", strings.NewReader(goodBody(t))); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	cancel()
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "shutdown") {
			t.Errorf("Serve = %v, want a shutdown error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not give up after ShutdownTimeout")
	}
}

func TestRun(t *testing.T) {
	if err := Run(context.Background(), "256.0.0.1:bad", New(&fakeGen{}, Options{Logger: discard}), ServeOptions{Logger: discard}); err == nil {
		t.Error("Run on a bad address succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Run(ctx, "127.0.0.1:0", New(&fakeGen{}, Options{Logger: discard}), ServeOptions{Logger: discard}); err != nil {
		t.Errorf("Run with a done context: %v", err)
	}
}
