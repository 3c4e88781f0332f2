// Package lambda is the AWS Lambda front end of the function. In the data
// flow it is where an invocation enters and leaves: event bytes -> a
// validated schema.Request -> the warm Generator (the pipeline over a
// loaded bundle, created once at init) -> schema.Response -> the event's
// reply, or object storage for events that have none.
//
// One function serves every event source; Handler.Invoke tells them apart
// by the payload's shape:
//
//   - Function URL and API Gateway HTTP API (payload format 2.0) events,
//     which carry requestContext.http, run through the same
//     server.Handler the edge server uses (POST /v1/generate, /healthz,
//     /readyz, /metrics), wrapped by aws-lambda-go's lambdaurl. The reply
//     is the buffered HTTP response both accept (statusCode, headers,
//     body, base64 for binary bodies such as image/png), with the headers
//     X-Cold-Start and, on a cold start, X-Init-Ms. A named API Gateway
//     stage is stripped from the path. Function URLs in RESPONSE_STREAM
//     mode are not served.
//   - SQS events (Records with eventSource aws:sqs): each message body is
//     a request, run one after the other. The images and an OutputRecord
//     (<id>.json, the response with images as object references) are
//     written to CONTROLFN_OUTPUT_BUCKET under
//     CONTROLFN_OUTPUT_PREFIX<message id>. Failed messages are returned in
//     batchItemFailures (the event source mapping needs
//     ReportBatchItemFailures); the others are done. A message body that
//     is an S3 event notification is served as one.
//   - S3 events (Records with eventSource aws:s3): an object created under
//     CONTROLFN_INPUT_PREFIX with a .png, .jpg or .jpeg suffix is the
//     control image of a generation whose parameters come from a sidecar
//     object "<key>.json" (a request without the image) or, without one,
//     from the object's metadata (x-amz-meta-prompt, x-amz-meta-seed,
//     x-amz-meta-num-inference-steps, ...). Outputs go to the output
//     bucket (default: the same bucket) at the key relative to the input
//     prefix, under the output prefix and without the extension:
//     <base>.png (or -0, -1 and -grid for several images) and <base>.json,
//     or <base>.error.json when the request is refused. Other objects, and
//     objects under the output prefix of the output bucket, are ignored,
//     so that outputs written beside the inputs never loop.
//   - Anything else is a direct invoke whose payload is the request. The
//     reply is the schema.Response with "cold" (and "init_ms" on a cold
//     start); a request the schema refuses gets an ErrorResponse, the
//     body the HTTP server answers a 400 with, naming the field.
//
// Errors: a request's faults are part of the reply (HTTP status, error
// body, batchItemFailures, .error.json). A function error, with an
// errorType Lambda reports, is returned for payloads that are no event
// this function serves (UnsupportedEvent, MalformedEvent), for direct
// invokes that failed on our side (GenerationTimeout, InternalError), and
// for S3 events with records that did (RecordsFailed), so that Lambda's
// error metrics and retries see them.
//
// Deadlines: generations run under the invocation's deadline less
// CONTROLFN_DEADLINE_MARGIN (default 2s, at most a quarter of the time
// left), so that a generation stopped between steps still gets its reply
// out before Lambda would kill the runtime, and the warm model survives.
// A panic in the generator is an internal error of that request only.
//
// Object storage is S3 through the AWS SDK for Go v2 with the default
// credential chain; CONTROLFN_S3_ENDPOINT points it elsewhere (MinIO),
// with path-style addressing unless CONTROLFN_S3_PATH_STYLE=false.
// Control images may be named by {"bucket", "key"} in direct and SQS
// requests (CONTROLFN_INPUT_BUCKET when the bucket is left out), and in
// Function URL requests only with CONTROLFN_URL_OBJECT_KEYS=true.
//
// Logs are JSON (log/slog) on stderr, one "invocation" line per
// invocation with the Lambda request id, the event kind, a status, cold
// and init_ms, timings and errors; never prompts or image data. HTTP
// requests add the server's own "request" line.
//
// Main is the runtime's entry point; cmd/controlfn calls it with the
// constructor of the real Generator.
package lambda
