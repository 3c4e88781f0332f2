package lambda

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"mime"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/google/uuid"

	"github.com/controlfn/controlfn/function/schema"
)

// maxSidecarBytes bounds a sidecar's size: a request without its image
// takes a few hundred bytes, prompts of MaxPromptBytes included.
const maxSidecarBytes = 64 << 10

// Statuses of an S3Result.
const (
	S3Done     = "done"     // generated; Outputs lists the keys written
	S3Ignored  = "ignored"  // not an input (Reason says why)
	S3Rejected = "rejected" // the request was at fault; its .error.json was written
	S3Failed   = "failed"   // our fault or a timeout; the invocation fails for a retry
)

// S3Summary is the reply to an S3 event (S3 invokes asynchronously and
// drops it; it is for tests and manual invokes).
type S3Summary struct {
	Records []S3Result `json:"records"`
}

// S3Result is the outcome of one S3 record.
type S3Result struct {
	Bucket    string   `json:"bucket"`
	Key       string   `json:"key"`
	Status    string   `json:"status"`
	Reason    string   `json:"reason,omitempty"`
	RequestID string   `json:"request_id,omitempty"`
	Outputs   []string `json:"outputs,omitempty"`
	// Kind is the kind of failure of a rejected or failed record:
	// bad_request, timeout or internal.
	Kind string `json:"kind,omitempty"`
	// detail is the internal cause of a failure, for the log only.
	detail string
}

// s3Log is an S3Result as the log shows it.
type s3Log struct {
	S3Result
	Detail string `json:"detail,omitempty"`
}

func logResults(results []S3Result) []s3Log {
	out := make([]s3Log, len(results))
	for i, r := range results {
		out[i] = s3Log{r, r.detail}
	}
	return out
}

// s3Event serves S3 event notifications: a control image created under
// the input prefix is generated from, its parameters taken from a
// sidecar object "<key>.json" (a schema request without the image) or,
// without one, from the object's metadata (x-amz-meta-prompt, ...).
// Outputs go under the output prefix, at the image's key relative to the
// input prefix, without its extension: <base>.png and <base>.json, or
// <base>.error.json when the request is refused. A record that failed on
// our side fails the invocation so that Lambda retries the event.
func (h *Handler) s3Event(ctx context.Context, inv *invocation, payload []byte) ([]byte, error) {
	results, err := h.s3Records(ctx, inv, payload)
	if err != nil {
		inv.status = "malformed"
		return nil, functionError("MalformedEvent", err.Error())
	}
	inv.status, err = summarize(inv, results)
	if err != nil {
		return nil, functionError("RecordsFailed", err.Error())
	}
	return marshal(S3Summary{Records: results})
}

// s3Records runs the records of an S3 event, one after the other.
func (h *Handler) s3Records(ctx context.Context, inv *invocation, payload []byte) ([]S3Result, error) {
	var ev events.S3Event
	if err := json.Unmarshal(payload, &ev); err != nil {
		return nil, fmt.Errorf("malformed S3 event: %w", err)
	}
	results := make([]S3Result, 0, len(ev.Records))
	for _, rec := range ev.Records {
		if inv.hasDeadline && time.Now().After(inv.deadline) {
			results = append(results, S3Result{Bucket: rec.S3.Bucket.Name, Key: rec.S3.Object.URLDecodedKey,
				Status: S3Failed, Reason: errOutOfTime.Error(), Kind: "timeout"})
			continue
		}
		results = append(results, h.s3Record(ctx, inv, rec))
	}
	return results, nil
}

// summarize logs the results and says how the invocation went; the error
// lists the failed records.
func summarize(inv *invocation, results []S3Result) (string, error) {
	var failed []string
	counts := map[string]int{}
	for _, r := range results {
		counts[r.Status]++
		if r.Status == S3Failed {
			failed = append(failed, fmt.Sprintf("%s (request id %s): %s", ObjectRef{r.Bucket, r.Key}, r.RequestID, r.Reason))
		}
	}
	inv.attrs = append(inv.attrs, slog.Int("records", len(results)),
		slog.Int("done", counts[S3Done]), slog.Int("ignored", counts[S3Ignored]),
		slog.Int("rejected", counts[S3Rejected]), slog.Int("failed", counts[S3Failed]),
		slog.Any("results", logResults(results)))
	if len(failed) > 0 {
		return "failed", fmt.Errorf("%d of %d S3 records failed: %s", len(failed), len(results), strings.Join(failed, "; "))
	}
	return "ok", nil
}

// isImageKey reports whether key names a PNG or JPEG by its suffix.
func isImageKey(key string) bool {
	switch strings.ToLower(path.Ext(key)) {
	case ".png", ".jpg", ".jpeg":
		return true
	}
	return false
}

func (h *Handler) s3Record(ctx context.Context, inv *invocation, rec events.S3EventRecord) S3Result {
	bucket, key := rec.S3.Bucket.Name, rec.S3.Object.URLDecodedKey
	res := S3Result{Bucket: bucket, Key: key}
	ignore := func(why string) S3Result {
		res.Status, res.Reason = S3Ignored, why
		return res
	}
	outBucket := h.cfg.OutputBucket
	if outBucket == "" {
		outBucket = bucket
	}
	switch {
	case !strings.HasPrefix(rec.EventName, "ObjectCreated:"):
		return ignore("event " + rec.EventName + " is not an object creation")
	case bucket == "" || key == "":
		return ignore("the record names no object")
	case outBucket == bucket && strings.HasPrefix(key, h.cfg.OutputPrefix):
		return ignore("under the output prefix " + h.cfg.OutputPrefix)
	case !strings.HasPrefix(key, h.cfg.InputPrefix):
		return ignore("outside the input prefix " + h.cfg.InputPrefix)
	case !isImageKey(key):
		return ignore("not a .png, .jpg or .jpeg object")
	}
	res.RequestID = uuid.NewString()
	base := h.cfg.OutputPrefix + strings.TrimSuffix(strings.TrimPrefix(key, h.cfg.InputPrefix), path.Ext(key))
	src := ObjectRef{Bucket: bucket, Key: key}

	req, err := h.s3Request(ctx, src)
	if errors.Is(err, ErrNotFound) {
		// Deleted since the event was sent: nothing to generate from.
		return ignore("the object no longer exists")
	}
	var resp *schema.Response
	if err == nil {
		withSeed(&req)
		resp, err = h.generate(ctx, inv, res.RequestID, req, bucket)
	}
	if err == nil {
		res.Outputs, err = h.writeOutputs(ctx, outBucket, base, OutputRecord{Response: resp, Source: &src})
	}
	if err == nil {
		res.Status = S3Done
		return res
	}
	f := describe(err)
	res.Kind, res.Reason, res.detail = f.kind, f.msg, f.detail
	if f.field != "" {
		res.Reason = f.field + ": " + f.msg
	}
	if f.kind != "bad_request" {
		res.Status = S3Failed
		return res
	}
	// The request is at fault and a retry would fail the same way: the
	// error is the output, where the client looks for one.
	errKey := base + ".error.json"
	if err := h.writeError(ctx, outBucket, errKey, f, res.RequestID, src); err != nil {
		res.Status, res.Kind, res.detail = S3Failed, "internal", err.Error()
		res.Reason = "internal error; the function's log has details under this request id"
		return res
	}
	res.Status, res.Outputs = S3Rejected, []string{errKey}
	return res
}

// writeError stores the error record of a refused S3 request.
func (h *Handler) writeError(ctx context.Context, bucket, key string, f failure, id string, src ObjectRef) error {
	data, err := json.MarshalIndent(struct {
		Error  errorDetail `json:"error"`
		Source ObjectRef   `json:"source"`
	}{errorDetail{Field: f.field, Message: f.msg, RequestID: id}, src}, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the error record: %w", err)
	}
	if err := h.store.Put(ctx, bucket, key, Object{Data: append(data, '\n'), ContentType: "application/json"}); err != nil {
		return fmt.Errorf("writing the error record: %w", err)
	}
	return nil
}

// s3Request reads the control image src and its parameters, from the
// sidecar src.key+".json" when there is one, else from the image's
// metadata, into a decoded request.
func (h *Handler) s3Request(ctx context.Context, src ObjectRef) (schema.Request, error) {
	info := h.gen.Info()
	if h.store == nil {
		return schema.Request{}, errNoStore
	}
	img, err := h.store.Get(ctx, src.Bucket, src.Key, schema.MaxImageBytes)
	switch {
	case errors.Is(err, ErrTooLarge):
		return schema.Request{}, &schema.FieldError{Field: controlImageField(info, 0), Msg: fmt.Sprintf("%s is over %d bytes", src, schema.MaxImageBytes)}
	case err != nil:
		return schema.Request{}, fmt.Errorf("fetching the control image: %w", err)
	}
	sidecar := ObjectRef{Bucket: src.Bucket, Key: src.Key + ".json"}
	side, err := h.store.Get(ctx, sidecar.Bucket, sidecar.Key, maxSidecarBytes)
	var body []byte
	var from string
	switch {
	case err == nil:
		from = "sidecar " + sidecar.String()
		body, err = withImage(side.Data, img.Data, info)
	case errors.Is(err, ErrNotFound):
		from = "the metadata of " + src.String()
		body, err = metadataRequest(img.Metadata, img.Data, info)
	case errors.Is(err, ErrTooLarge):
		return schema.Request{}, &schema.FieldError{Msg: fmt.Sprintf("sidecar %s is over %d bytes", sidecar, maxSidecarBytes)}
	default:
		return schema.Request{}, fmt.Errorf("fetching the sidecar: %w", err)
	}
	var req schema.Request
	if err == nil {
		req, err = schema.Decode(body, info)
	}
	var fe *schema.FieldError
	if errors.As(err, &fe) {
		return schema.Request{}, &schema.FieldError{Field: fe.Field, Msg: fe.Msg + " (in " + from + ")"}
	}
	return req, err
}

// withImage adds image to a sidecar request as its control image, unless
// the sidecar names control images itself (several ControlNets).
func withImage(sidecar, image []byte, info schema.ModelInfo) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(sidecar, &fields); err != nil || fields == nil {
		// Decode says what is wrong with a body as it does for any request.
		if _, derr := schema.Decode(sidecar, info); derr != nil {
			return nil, derr
		}
		return nil, &schema.FieldError{Msg: "the sidecar must be a JSON object"}
	}
	if _, ok := fields["control_image"]; ok {
		return sidecar, nil
	}
	if _, ok := fields["control_images"]; ok {
		return sidecar, nil
	}
	name, value := imageMember(image, info)
	var body bytes.Buffer
	body.WriteString(`{"` + name + `":`)
	body.Write(value)
	if len(fields) > 0 {
		// Splice the sidecar's members in after ours; schema.Decode then
		// checks them (duplicates included) as it checks any body.
		body.WriteByte(',')
		body.Write(sidecar[bytes.IndexByte(sidecar, '{')+1:])
	} else {
		body.WriteByte('}')
	}
	return body.Bytes(), nil
}

// imageMember is the request member that carries image inline.
func imageMember(image []byte, info schema.ModelInfo) (string, json.RawMessage) {
	b64, _ := json.Marshal(base64.StdEncoding.EncodeToString(image))
	if info.ControlNets == 1 {
		return "control_image", b64
	}
	return "control_images", append(append([]byte{'['}, b64...), ']')
}

// metadataFields are the request fields object metadata may set, and
// whether each is a string.
var metadataFields = map[string]bool{
	"prompt": true, "negative_prompt": true, "scheduler": true, "output_format": true,
	"control_type": false, "canny_low": false, "canny_high": false,
	"controlnet_conditioning_scale": false, "control_guidance_start": false, "control_guidance_end": false,
	"guess_mode": false, "width": false, "height": false, "num_inference_steps": false,
	"guidance_scale": false, "seed": false, "num_images": false, "clip_skip": false,
}

// metadataRequest builds a request body from object metadata: each key
// naming a request field ("num-inference-steps" or "num_inference_steps",
// as x-amz-meta-*) sets it; other keys belong to other tools and are
// skipped. String fields take the value as text (RFC 2047 encoded words,
// which S3 uses for non-ASCII metadata, decoded); the others take it as
// JSON, or as a string when it is not JSON, so that schema.Decode names
// the field whose type is wrong.
func metadataRequest(meta map[string]string, image []byte, info schema.ModelInfo) ([]byte, error) {
	fields := map[string]json.RawMessage{}
	var words mime.WordDecoder
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		name := strings.ReplaceAll(strings.ToLower(k), "-", "_")
		isString, ok := metadataFields[name]
		if !ok {
			continue
		}
		if _, dup := fields[name]; dup {
			return nil, &schema.FieldError{Field: name, Msg: "set twice in the object metadata"}
		}
		v := strings.TrimSpace(meta[k])
		var raw json.RawMessage
		if !isString && json.Valid([]byte(v)) {
			raw = json.RawMessage(v)
		} else {
			if isString {
				if d, err := words.DecodeHeader(v); err == nil {
					v = d
				}
			}
			raw, _ = json.Marshal(v)
		}
		fields[name] = raw
	}
	name, value := imageMember(image, info)
	fields[name] = value
	body, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("encoding the request from metadata: %w", err)
	}
	return body, nil
}
