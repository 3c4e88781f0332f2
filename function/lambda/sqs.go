package lambda

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/controlfn/controlfn/function/schema"
)

// messageFailure is a failed SQS message as the log shows it.
type messageFailure struct {
	MessageID string `json:"message_id"`
	Kind      string `json:"kind"`
	Field     string `json:"field,omitempty"`
	Error     string `json:"error"`
	Detail    string `json:"detail,omitempty"`
}

// sqsEvent serves a batch of SQS messages, one generation per message
// body (a schema request), one after the other. SQS has no reply channel:
// the images and an OutputRecord go to the output bucket under
// <output prefix><message id>, so that a redelivered message overwrites
// its own outputs. A message whose body is an S3 event notification (S3
// -> SQS -> Lambda) is served as that S3 event.
//
// Failed messages are listed in batchItemFailures and the others are
// done; this needs ReportBatchItemFailures on the event source mapping,
// without which Lambda deletes the whole batch. Messages not started
// before the deadline are reported failed, to be redelivered.
func (h *Handler) sqsEvent(ctx context.Context, inv *invocation, payload []byte) ([]byte, error) {
	var ev events.SQSEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		inv.status = "malformed"
		return nil, functionError("MalformedEvent", "malformed SQS event: "+err.Error())
	}
	resp := events.SQSEventResponse{BatchItemFailures: []events.SQSBatchItemFailure{}}
	var failures []messageFailure
	for _, m := range ev.Records {
		var err error
		if inv.hasDeadline && time.Now().After(inv.deadline) {
			err = errOutOfTime
		} else {
			err = h.sqsMessage(ctx, inv, m)
		}
		if err == nil {
			continue
		}
		resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: m.MessageId})
		f := describe(err)
		failures = append(failures, messageFailure{MessageID: m.MessageId, Kind: f.kind, Field: f.field, Error: f.msg, Detail: f.detail})
	}
	switch {
	case len(failures) == 0:
		inv.status = "ok"
	case len(failures) == len(ev.Records):
		inv.status = "failed"
	default:
		inv.status = "partial"
	}
	inv.attrs = append(inv.attrs, slog.Int("records", len(ev.Records)), slog.Int("failed", len(failures)))
	if len(failures) > 0 {
		inv.attrs = append(inv.attrs, slog.Any("failures", failures))
	}
	return marshal(resp)
}

// sqsMessage runs one message; any error fails it.
func (h *Handler) sqsMessage(ctx context.Context, inv *invocation, m events.SQSMessage) error {
	body := []byte(m.Body)
	if kind, why := classify(body); kind == eventS3 {
		return h.s3Notification(ctx, inv, body)
	} else if isS3TestEvent(body) {
		return nil // sent once when a notification is configured
	} else if kind == eventUnsupported {
		return &schema.FieldError{Msg: why}
	}
	if h.cfg.OutputBucket == "" {
		// Checked first: without a place for the result the work is lost.
		return fmt.Errorf("%s is not set: an SQS request has no reply channel and needs an output bucket", EnvOutputBucket)
	}
	id := requestID(m.MessageId)
	req, err := schema.Decode(body, h.gen.Info())
	if err != nil {
		return err
	}
	withSeed(&req)
	resp, err := h.generate(ctx, inv, id, req, h.cfg.InputBucket)
	if err != nil {
		return err
	}
	_, err = h.writeOutputs(ctx, h.cfg.OutputBucket, h.cfg.OutputPrefix+id, OutputRecord{Response: resp, MessageID: m.MessageId})
	return err
}

// s3Notification serves an S3 event carried by an SQS message; the
// message fails when a record failed on our side.
func (h *Handler) s3Notification(ctx context.Context, inv *invocation, body []byte) error {
	results, err := h.s3Records(ctx, inv, body)
	if err != nil {
		return &schema.FieldError{Msg: err.Error()}
	}
	inv.attrs = append(inv.attrs, slog.Any("s3_results", logResults(results)))
	for _, r := range results {
		if r.Status == S3Failed {
			return fmt.Errorf("%s: %s", ObjectRef{r.Bucket, r.Key}, r.Reason)
		}
	}
	return nil
}

func isS3TestEvent(body []byte) bool {
	var top map[string]json.RawMessage
	return json.Unmarshal(body, &top) == nil && string(top["Event"]) == `"s3:TestEvent"`
}
