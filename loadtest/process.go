package loadtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// stopGrace is how long a process gets to exit after SIGTERM before it is
// killed; the server drains in milliseconds and the emulator resets its
// sandbox in about as long.
const stopGrace = 2 * time.Second

// tailLines is how many of a process's last output lines are kept for
// error messages.
const tailLines = 12

// process is one child: the HTTP server, or the emulator with the
// bootstrap it starts. Its stdout and stderr go to one pipe that a
// logWatch reads until every process holding it has exited.
type process struct {
	cmd    *exec.Cmd
	log    *logWatch
	exited chan struct{} // closed when cmd.Wait returned
	err    error         // cmd.Wait's result, set before exited closes
}

// startProcess starts name with args and env, copying its output to
// logPath when that is not empty.
func startProcess(name string, args, env []string, logPath string) (*process, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating the output pipe: %w", err)
	}
	var raw io.WriteCloser
	if logPath != "" {
		f, err := os.Create(logPath)
		if err != nil {
			r.Close()
			w.Close()
			return nil, fmt.Errorf("creating the process log: %w", err)
		}
		raw = f
	}
	cmd := exec.Command(name, args...)
	cmd.Env = env
	// One *os.File for both streams: the child writes to the pipe
	// directly, with no copying goroutine that Wait would block on.
	cmd.Stdout, cmd.Stderr = w, w
	ownGroup(cmd)
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		if raw != nil {
			raw.Close()
		}
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	w.Close() // the child holds its own copy; EOF comes when all copies close
	p := &process{cmd: cmd, log: newLogWatch(r, raw), exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop ends the process group: SIGTERM, then SIGKILL after stopGrace. It
// waits for the output to be read to the end (bounded by stopGrace too,
// in case something outside the group inherited the pipe).
func (p *process) stop() {
	select {
	case <-p.exited:
	default:
		_ = terminate(p.cmd) // fails only when the group is already gone
		select {
		case <-p.exited:
		case <-time.After(stopGrace):
			_ = kill(p.cmd)
			<-p.exited
		}
	}
	// The group leader is gone; a bootstrap it left behind still holds
	// the pipe: kill the rest of the group too.
	_ = kill(p.cmd)
	p.log.finish(stopGrace)
}

// exitError describes how the process ended, for a start that failed.
func (p *process) exitError() error {
	err := p.err
	if err == nil {
		err = errors.New("exited with status 0")
	}
	return fmt.Errorf("%s %w; last output:\n%s", p.cmd.Path, err, p.log.tail())
}

// logLine holds the fields of the function's JSON log lines that the
// cold-start breakdown reads (cmd/controlfn's "ready" and "init" lines,
// the Lambda runtime's "init" and "invocation" lines, the server's
// "request" line).
type logLine struct {
	Time        time.Time `json:"time"`
	Msg         string    `json:"msg"`
	OpenMS      *float64  `json:"open_ms"`
	LoadMS      *float64  `json:"load_ms"`
	CompileMS   *float64  `json:"compile_ms"`
	WarmupMS    *float64  `json:"warmup_ms"`
	TotalMS     *float64  `json:"total_ms"`
	InitMS      *float64  `json:"init_ms"`
	GeneratorMS *float64  `json:"generator_ms"`
	DurationMS  *float64  `json:"duration_ms"`
	Cold        *bool     `json:"cold"`
}

// processLog is what a logWatch kept of a process's output.
type processLog struct {
	// serving is the server's "serving" line, logged once it listens,
	// which it starts at the same time as the bundle load.
	serving *logLine
	// load is the first line reporting the bundle's cold start: the
	// server's "ready" or the bootstrap's "init" with open_ms..total_ms.
	load *logLine
	// runtimeInit is the Lambda runtime's "init" line (init_ms,
	// generator_ms): the whole init, measured from the runtime's start.
	runtimeInit *logLine
	// firstCall is the first "invocation" (Lambda) or "request" (server)
	// line marked cold, with its duration.
	firstCall *logLine
}

// logWatch reads a process's output line by line, copies it to a file,
// keeps the last lines and the JSON lines the breakdown needs.
type logWatch struct {
	r    *os.File
	done chan struct{}

	mu    sync.Mutex
	seen  processLog
	lines []string // ring of the last tailLines lines
	next  int
}

func newLogWatch(r *os.File, raw io.WriteCloser) *logWatch {
	l := &logWatch{r: r, done: make(chan struct{}), lines: make([]string, 0, tailLines)}
	go l.read(raw)
	return l
}

func (l *logWatch) read(raw io.WriteCloser) {
	defer close(l.done)
	if raw != nil {
		defer raw.Close()
	}
	br := bufio.NewReaderSize(l.r, 64<<10)
	long := false // inside a line longer than the buffer: not one of ours
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && raw != nil {
			_, _ = raw.Write(line) // a full disk must not stall the child
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			long = true
			continue
		case long:
			long = false
		case len(line) > 0:
			l.observe(bytes.TrimSpace(line))
		}
		if err != nil {
			return
		}
	}
}

func (l *logWatch) observe(line []byte) {
	if len(line) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := string(line)
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	if len(l.lines) < tailLines {
		l.lines = append(l.lines, s)
	} else {
		l.lines[l.next] = s
		l.next = (l.next + 1) % tailLines
	}
	if line[0] != '{' {
		return
	}
	var v logLine
	if json.Unmarshal(line, &v) != nil || v.Time.IsZero() {
		return
	}
	switch {
	case v.Msg == "serving":
		if l.seen.serving == nil {
			l.seen.serving = &v
		}
	case (v.Msg == "ready" || v.Msg == "init") && v.OpenMS != nil && v.TotalMS != nil:
		if l.seen.load == nil {
			l.seen.load = &v
		}
	case v.Msg == "init" && v.InitMS != nil && v.GeneratorMS != nil:
		if l.seen.runtimeInit == nil {
			l.seen.runtimeInit = &v
		}
	case (v.Msg == "invocation" || v.Msg == "request") && v.Cold != nil && *v.Cold && v.DurationMS != nil:
		if l.seen.firstCall == nil {
			l.seen.firstCall = &v
		}
	}
}

// finish waits up to d for the output to end, then stops reading.
func (l *logWatch) finish(d time.Duration) {
	select {
	case <-l.done:
	case <-time.After(d):
	}
	l.r.Close()
	<-l.done
}

// snapshot returns what was seen so far.
func (l *logWatch) snapshot() processLog {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen
}

// tail returns the last lines, oldest first.
func (l *logWatch) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.lines))
	out = append(out, l.lines[l.next:]...)
	out = append(out, l.lines[:l.next]...)
	return strings.Join(out, "\n")
}

// freePort returns a loopback TCP port nobody listens on now. Another
// process may take it before ours binds it; the launcher retries then.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
