package lambda

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
)

// maxResponseBytes is Lambda's limit on a buffered (synchronous) response.
const maxResponseBytes = 6 << 20

// Headers added to Function URL and API Gateway responses.
const (
	HeaderColdStart = "X-Cold-Start" // "true" on the first invocation of a process
	HeaderInitMS    = "X-Init-Ms"    // its init time, on the first invocation only
)

func isFunctionURLDomain(domain string) bool {
	return strings.Contains(domain, ".lambda-url.")
}

// httpEvent serves a Function URL or API Gateway HTTP API (payload 2.0)
// request with the shared server.Handler through lambdaurl, and answers
// in the buffered format both accept, binary bodies in base64. Function
// URLs in RESPONSE_STREAM mode are not served: the buffered reply is
// what API Gateway and a default Function URL take.
func (h *Handler) httpEvent(ctx context.Context, inv *invocation, payload []byte) ([]byte, error) {
	var ev events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(payload, &ev); err != nil {
		inv.status = "malformed"
		return nil, functionError("MalformedEvent", "malformed "+inv.event+" event: "+err.Error())
	}
	if ev.RequestContext.HTTP.Method == "" {
		inv.status = "malformed"
		return nil, functionError("MalformedEvent", "malformed "+inv.event+" event: requestContext.http.method is empty")
	}
	req := toURLRequest(&ev, inv.awsID)
	var badBody error
	if req.IsBase64Encoded {
		// Decoded here rather than by lambdaurl, whose decoder error would
		// reach the client as a truncated body.
		body, err := base64.StdEncoding.DecodeString(req.Body)
		req.Body, req.IsBase64Encoded, badBody = string(body), false, err
	}
	// The generation, not the HTTP request, carries the deadline (see
	// httpGenerator): were the request context to expire, the server
	// would take it for a client gone away and answer 499 instead of 504.
	hctx := context.WithValue(context.WithoutCancel(ctx), invocationKey{}, inv)
	var resp events.LambdaFunctionURLResponse
	if badBody != nil {
		resp = jsonError(http.StatusBadRequest, "", "the event's body is not valid base64: "+badBody.Error())
	} else {
		var err error
		if resp, err = h.serve(hctx, req); err != nil {
			return nil, err
		}
	}
	if resp.StatusCode == http.StatusGatewayTimeout && inv.timeout != nil {
		rewordTimeout(&resp, inv.timeout)
	}
	resp.Headers[HeaderColdStart] = strconv.FormatBool(inv.cold)
	if inv.cold {
		resp.Headers[HeaderInitMS] = strconv.FormatFloat(ms(h.initDur), 'f', 3, 64)
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return nil, fmt.Errorf("encoding the HTTP response: %w", err)
	}
	if len(out) > maxResponseBytes {
		tooLarge := len(out)
		resp = jsonError(http.StatusInternalServerError, "",
			fmt.Sprintf("the response takes %d bytes, over Lambda's %d byte limit: ask for fewer images, a smaller size or JPEG, or send the request through SQS or S3, which write to object storage", tooLarge, maxResponseBytes))
		inv.attrs = append(inv.attrs, slog.Int("response_bytes", tooLarge))
		if out, err = json.Marshal(resp); err != nil {
			return nil, fmt.Errorf("encoding the HTTP response: %w", err)
		}
	}
	inv.status = strconv.Itoa(resp.StatusCode)
	inv.attrs = append(inv.attrs, slog.Int("http_status", resp.StatusCode), slog.String("method", req.RequestContext.HTTP.Method), slog.String("path", req.RawPath))
	if id := resp.Headers["X-Request-Id"]; id != "" {
		inv.attrs = append(inv.attrs, slog.String("request_id", id))
	}
	return out, nil
}

// serve runs req through the HTTP handler and buffers the response.
func (h *Handler) serve(ctx context.Context, req *events.LambdaFunctionURLRequest) (events.LambdaFunctionURLResponse, error) {
	sresp, err := h.serveURL(ctx, req)
	if err != nil {
		// lambdaurl could not build an http.Request (a method or path
		// that is not HTTP); the server never saw it.
		return jsonError(http.StatusBadRequest, "", "malformed HTTP request: "+err.Error()), nil
	}
	body, err := io.ReadAll(sresp.Body)
	if err != nil {
		return events.LambdaFunctionURLResponse{}, fmt.Errorf("reading the HTTP handler's response: %w", err)
	}
	resp := events.LambdaFunctionURLResponse{StatusCode: sresp.StatusCode, Headers: maps.Clone(sresp.Headers), Cookies: sresp.Cookies}
	if resp.Headers == nil {
		resp.Headers = map[string]string{}
	}
	setBody(&resp, body)
	return resp, nil
}

// toURLRequest converts an API Gateway HTTP API (or Function URL) event
// to the Function URL request lambdaurl takes: the two share their
// format, save the stage that API Gateway puts in front of the path of a
// named stage, and cookies, which lambdaurl would drop.
func toURLRequest(ev *events.APIGatewayV2HTTPRequest, awsID string) *events.LambdaFunctionURLRequest {
	path := ev.RawPath
	if stage := ev.RequestContext.Stage; stage != "" && stage != "$default" {
		if rest, ok := strings.CutPrefix(path, "/"+stage); ok && (rest == "" || rest[0] == '/') {
			path = rest
			if path == "" {
				path = "/"
			}
		}
	}
	headers := make(map[string]string, len(ev.Headers)+2)
	for k, v := range ev.Headers {
		headers[strings.ToLower(k)] = v
	}
	if len(ev.Cookies) > 0 {
		headers["cookie"] = strings.Join(ev.Cookies, "; ")
	}
	// The server keeps a caller's X-Request-Id that is a UUID; Lambda's
	// request id is one, and with it our log lines join Lambda's.
	if _, ok := headers["x-request-id"]; !ok && awsID != "" {
		headers["x-request-id"] = awsID
	}
	rc := ev.RequestContext
	return &events.LambdaFunctionURLRequest{
		Version:               ev.Version,
		RawPath:               path,
		RawQueryString:        ev.RawQueryString,
		Cookies:               ev.Cookies,
		Headers:               headers,
		QueryStringParameters: ev.QueryStringParameters,
		RequestContext: events.LambdaFunctionURLRequestContext{
			AccountID:    rc.AccountID,
			RequestID:    rc.RequestID,
			APIID:        rc.APIID,
			DomainName:   rc.DomainName,
			DomainPrefix: rc.DomainPrefix,
			Time:         rc.Time,
			TimeEpoch:    rc.TimeEpoch,
			HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{
				Method:    rc.HTTP.Method,
				Path:      path,
				Protocol:  rc.HTTP.Protocol,
				SourceIP:  rc.HTTP.SourceIP,
				UserAgent: rc.HTTP.UserAgent,
			},
		},
		Body:            ev.Body,
		IsBase64Encoded: ev.IsBase64Encoded,
	}
}

// setBody puts body in resp, in base64 unless it is text.
func setBody(resp *events.LambdaFunctionURLResponse, body []byte) {
	if isText(resp.Headers["Content-Type"]) && utf8.Valid(body) {
		resp.Body = string(body)
		return
	}
	resp.Body = base64.StdEncoding.EncodeToString(body)
	resp.IsBase64Encoded = true
}

func isText(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	switch {
	case strings.HasPrefix(mt, "text/"), mt == "application/json", strings.HasSuffix(mt, "+json"),
		mt == "application/xml", strings.HasSuffix(mt, "+xml"):
		return true
	}
	return false
}

// rewordTimeout replaces the message of the server's 504, which names the
// server's own generation timeout, with the invocation deadline's.
func rewordTimeout(resp *events.LambdaFunctionURLResponse, te *TimeoutError) {
	var body errorBody
	if resp.IsBase64Encoded || json.Unmarshal([]byte(resp.Body), &body) != nil {
		return
	}
	body.Error.Message = te.Error()
	if data, err := json.Marshal(body); err == nil {
		resp.Body = string(data)
		resp.Headers["Content-Length"] = strconv.Itoa(len(data))
	}
}

// jsonError is an error response in the server's format.
func jsonError(status int, field, msg string) events.LambdaFunctionURLResponse {
	body, _ := json.Marshal(errorBody{Error: errorDetail{Field: field, Message: msg}})
	return events.LambdaFunctionURLResponse{
		StatusCode: status,
		Headers:    map[string]string{"Content-Type": "application/json"},
		Body:       string(body),
	}
}
