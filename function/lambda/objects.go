package lambda

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/controlfn/controlfn/function/schema"
)

// ObjectRef names an object in storage.
type ObjectRef struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
}

func (r ObjectRef) String() string { return "s3://" + r.Bucket + "/" + r.Key }

// OutputRecord is the JSON object written beside the images of an SQS or
// S3 event: the schema.Response with its images as object references,
// and what triggered the generation.
type OutputRecord struct {
	*schema.Response
	// Source is the control image whose creation triggered an S3 event.
	Source *ObjectRef `json:"source,omitempty"`
	// MessageID is the SQS message that carried the request.
	MessageID string `json:"message_id,omitempty"`
}

// errNoStore is the failure of work that needs object storage in a
// handler built without one.
var errNoStore = errors.New("object storage is not configured for this function")

// controlImageField names control image i as the client most likely sent
// it: a one-ControlNet bundle's clients send control_image.
func controlImageField(info schema.ModelInfo, i int) string {
	if info.ControlNets == 1 {
		return "control_image"
	}
	return "control_images[" + strconv.Itoa(i) + "]"
}

// resolveObjects fetches the control images req names by object key,
// those without a bucket from bucket. The fetched bytes go through
// schema.Decode again, so that they get every check an inline image gets
// (format, declared size, the byte budget).
func (h *Handler) resolveObjects(ctx context.Context, req schema.Request, bucket string) (schema.Request, error) {
	info := h.gen.Info()
	var images []schema.ControlImage
	for i, img := range req.ControlImages {
		if !img.IsObject() {
			continue
		}
		field := controlImageField(info, i)
		if images == nil {
			images = append([]schema.ControlImage(nil), req.ControlImages...)
		}
		ref := ObjectRef{Bucket: img.Bucket, Key: img.Key}
		if ref.Bucket == "" {
			ref.Bucket = bucket
		}
		if ref.Bucket == "" {
			return req, &schema.FieldError{Field: field + ".bucket", Msg: "required: this function has no default input bucket (" + EnvInputBucket + ")"}
		}
		if h.store == nil {
			return req, errNoStore
		}
		obj, err := h.store.Get(ctx, ref.Bucket, ref.Key, schema.MaxImageBytes)
		switch {
		case errors.Is(err, ErrNotFound):
			return req, &schema.FieldError{Field: field, Msg: "object " + ref.String() + " not found"}
		case errors.Is(err, ErrTooLarge):
			return req, &schema.FieldError{Field: field, Msg: fmt.Sprintf("object %s is over %d bytes", ref, schema.MaxImageBytes)}
		case err != nil:
			return req, fmt.Errorf("fetching the control image: %w", err)
		}
		images[i] = schema.ControlImage{Data: obj.Data}
	}
	if images == nil {
		return req, nil
	}
	seed := req.Seed
	req.ControlImages = images
	body, err := json.Marshal(req)
	if err != nil {
		return req, fmt.Errorf("re-encoding the request: %w", err)
	}
	out, err := schema.Decode(body, info)
	if err != nil {
		var fe *schema.FieldError
		if errors.As(err, &fe) && info.ControlNets == 1 && fe.Field == "control_images[0]" {
			fe.Field = "control_image"
		}
		return req, err
	}
	out.Seed = seed
	return out, nil
}

// imageExt is the file name extension of an output image.
func imageExt(mime string) string {
	if mime == "image/jpeg" {
		return ".jpg"
	}
	return ".png"
}

// writeOutputs stores the images of resp under base (base.png, or
// base-0.png, base-1.png and base-grid.png for several) and then
// base.json, the OutputRecord: a reader that finds the JSON finds the
// images. It returns the keys written.
func (h *Handler) writeOutputs(ctx context.Context, bucket, base string, rec OutputRecord) ([]string, error) {
	if h.store == nil {
		return nil, errNoStore
	}
	resp := *rec.Response
	meta := map[string]string{
		"request-id": resp.RequestID,
		"seed":       strconv.FormatUint(resp.Seed, 10),
		"build-id":   resp.BuildID,
	}
	var keys []string
	put := func(img schema.Image, key string) (schema.Image, error) {
		if err := h.store.Put(ctx, bucket, key, Object{Data: img.Data, ContentType: img.MIME, Metadata: meta}); err != nil {
			return img, fmt.Errorf("writing the output image: %w", err)
		}
		keys = append(keys, key)
		return schema.Image{MIME: img.MIME, Bucket: bucket, Key: key}, nil
	}
	resp.Images = make([]schema.Image, len(rec.Images))
	for i, img := range rec.Images {
		key := base + imageExt(img.MIME)
		if len(rec.Images) > 1 {
			key = base + "-" + strconv.Itoa(i) + imageExt(img.MIME)
		}
		var err error
		if resp.Images[i], err = put(img, key); err != nil {
			return keys, err
		}
	}
	if rec.Grid != nil {
		grid, err := put(*rec.Grid, base+"-grid"+imageExt(rec.Grid.MIME))
		if err != nil {
			return keys, err
		}
		resp.Grid = &grid
	}
	rec.Response = &resp
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return keys, fmt.Errorf("encoding the output record: %w", err)
	}
	key := base + ".json"
	if err := h.store.Put(ctx, bucket, key, Object{Data: append(data, '\n'), ContentType: "application/json", Metadata: meta}); err != nil {
		return keys, fmt.Errorf("writing the output record: %w", err)
	}
	return append(keys, key), nil
}
