package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Defaults for ServeOptions.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout covers a 6 MB body on a slow link.
	DefaultReadTimeout = time.Minute
	// DefaultWriteTimeout runs from the end of the request headers, so it
	// must cover reading the body and the generation, or the connection
	// closes before the 504 can be written.
	DefaultWriteTimeout = DefaultReadTimeout + DefaultGenerateTimeout + 30*time.Second
	DefaultIdleTimeout  = 2 * time.Minute
	// DefaultShutdownTimeout lets a generation that just started finish.
	DefaultShutdownTimeout = DefaultGenerateTimeout + 30*time.Second
)

// ServeOptions configure the http.Server of Run and Serve. Zero fields
// take the defaults above.
type ServeOptions struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// ShutdownTimeout bounds the wait for in-flight requests after
	// SIGTERM or ctx cancellation; beyond it connections are closed.
	ShutdownTimeout time.Duration
	// Logger receives the server's own messages; nil means JSON on stderr.
	Logger *slog.Logger
}

func (o *ServeOptions) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&o.ReadTimeout, DefaultReadTimeout)
	def(&o.WriteTimeout, DefaultWriteTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	def(&o.ShutdownTimeout, DefaultShutdownTimeout)
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
}

// Run listens on addr and serves h until ctx is done or the process gets
// SIGTERM or SIGINT, then shuts down gracefully (see Serve).
func Run(ctx context.Context, addr string, h http.Handler, opts ServeOptions) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return Serve(ctx, ln, h, opts)
}

// Serve serves h on ln until ctx is done or the process gets SIGTERM or
// SIGINT. It then stops accepting connections and waits, up to
// ShutdownTimeout, for requests in flight to finish: a running generation
// completes and its client gets the result. A second signal kills the
// process as usual. Serve closes ln and returns nil after a clean
// shutdown.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, opts ServeOptions) error {
	opts.setDefaults()
	sigCtx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		ReadTimeout:       opts.ReadTimeout,
		WriteTimeout:      opts.WriteTimeout,
		IdleTimeout:       opts.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
		// Request contexts derive from Background, not ctx: shutting down
		// must let the running generation finish rather than cancel it.
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	opts.Logger.Info("serving", "addr", ln.Addr().String())

	select {
	case err := <-served:
		return fmt.Errorf("server: serve: %w", err)
	case <-sigCtx.Done():
	}
	stop() // from here a second signal terminates the process
	opts.Logger.Info("shutting down", "cause", context.Cause(sigCtx).Error(), "timeout", opts.ShutdownTimeout.String())
	shutCtx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		srv.Close()
		return fmt.Errorf("server: shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("server: serve: %w", err)
	}
	opts.Logger.Info("shut down")
	return nil
}
