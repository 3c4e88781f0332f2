// Package loadtest measures the function from outside, the way a caller
// sees it: cold starts (a fresh process per invocation, from process start
// through init to the first response) and warm invocations (many requests
// against processes that are already loaded), against the edge HTTP server
// (controlfn serve) or the Lambda bootstrap (controlfn lambda) under the
// AWS Lambda Runtime Interface Emulator.
//
// In the data flow it sits after everything else: it starts the real
// binary, sends real schema requests and reads the schema responses and
// the process's own log lines, so it may import only function/schema.
//
// # Modes
//
//   - cold: Cold times, start a process, send one request, stop it. Each
//     sample carries a breakdown of its total latency (see Breakdown).
//   - warm: start the process(es), send one priming request each (recorded
//     as a cold sample), then Requests requests from Concurrency workers.
//     Against the HTTP server all workers share one process, which runs
//     one generation at a time and answers 429 to the others: those count
//     as errors of kind "busy", so Concurrency > 1 there measures
//     rejection, not parallel throughput. Against the emulator every
//     worker gets its own process, because that is what Lambda does with
//     concurrent invocations (one execution environment serves one
//     invocation at a time) and because the emulator itself crashes on
//     overlapping invokes.
//   - mixed: requests arrive on a scripted schedule (Pattern) and are
//     served the way Lambda scales: by an idle warm process when there is
//     one, else by a new process (a cold start), up to MaxInstances (beyond
//     that the arrival is "throttled"). A process idle for longer than
//     IdleTimeout is stopped, so the gaps in the pattern force cold starts.
//
// # What a cold start is made of
//
// A cold sample's total runs from the moment the process is asked for
// (the HTTP server: the tool starts the process; Lambda: the invoke that
// makes the emulator start the bootstrap) to the first response. Its parts
// (see the Part constants) are spans on one timeline built from three
// sources read on one machine: the tool's clock; the timestamps of the
// process's JSON log lines (the server's "serving" and "ready", the
// bootstrap's two "init" lines and its cold "invocation" line); and the
// durations those lines and the response report (open_ms, load_ms,
// compile_ms, warmup_ms and total_ms of the load; init_ms and generator_ms
// of the Lambda init; duration_ms of the invocation; timings_ms.total of
// the first generation). The process logs nothing when it starts, so
// Lambda's spawn part ends where its init line says the runtime's init
// began (the line's time less init_ms). What the parts leave uncovered,
// or cover twice, is reported as Unaccounted, never spread over them;
// a part whose log line was not seen is named in Missing and its time
// falls into Unaccounted. The emulator's own start (before it listens) is
// not part of any total: on AWS that machinery is already running.
//
// All traffic is loopback: the tool binds its processes to 127.0.0.1 and
// refuses a URL whose host is not a loopback address.
package loadtest
