package lambda

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/controlfn/controlfn/artifacts"
	"github.com/controlfn/controlfn/function/lambda/internal/fakegen"
)

// These tests run the built test bootstrap under the real Lambda Runtime
// Interface Emulator, and the S3 paths against a real MinIO server, both
// started on loopback ports. The binaries are found through
// CONTROLFN_RIE and CONTROLFN_MINIO, else PATH; a missing one skips the
// test, or fails it when CI is set.

// tool returns the path of an external program the test needs.
func tool(t *testing.T, envVar, name string) string {
	t.Helper()
	if p := os.Getenv(envVar); p != "" {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found: set %s or put it on PATH (go install %s)", name, envVar, map[string]string{
		"aws-lambda-rie": "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@latest",
		"minio":          "github.com/minio/minio@latest",
	}[name])
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// freeAddr picks a free loopback port. Another process could take it
// before the server under test binds it; the tests then fail to start
// rather than talk to the wrong server, as each waits for its own.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startProcess starts a program in a process group of its own, so that
// the cleanup also ends the children it started (the RIE's bootstrap).
func startProcess(t *testing.T, env []string, name string, args ...string) *lockedBuffer {
	t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), out)
		}
	})
	return out
}

func waitFor(t *testing.T, what string, out *lockedBuffer, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up; output:\n%s", what, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// buildBootstrap builds the test bootstrap into a temporary directory.
func buildBootstrap(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bootstrap")
	cmd := exec.Command(goTool(t), "build", "-o", bin, "github.com/controlfn/controlfn/function/lambda/internal/testbootstrap")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the bootstrap: %v\n%s", err, out)
	}
	return bin
}

// rie is a running emulator with the test bootstrap.
type rie struct {
	url string
	out *lockedBuffer
}

func startRIE(t *testing.T, env ...string) *rie {
	t.Helper()
	rieBin := tool(t, "CONTROLFN_RIE", "aws-lambda-rie")
	bootstrap := buildBootstrap(t)
	addr, apiAddr := freeAddr(t), freeAddr(t)
	env = append([]string{
		"AWS_LAMBDA_FUNCTION_TIMEOUT=3",
		"CONTROLFN_FAKE_INIT_DELAY=50ms",
		"AWS_REGION=us-east-1",
		"AWS_EC2_METADATA_DISABLED=true",
	}, env...)
	out := startProcess(t, env, rieBin,
		"--runtime-interface-emulator-address", addr, "--runtime-api-address", apiAddr, bootstrap)
	waitFor(t, "aws-lambda-rie", out, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return &rie{url: "http://" + addr + "/2015-03-31/functions/function/invocations", out: out}
}

// invoke posts a payload and returns the reply, or the function error's
// type and message.
func (r *rie) invoke(t *testing.T, payload []byte) (reply []byte, errType, errMsg string) {
	t.Helper()
	resp, err := http.Post(r.url, "application/json", bytes.NewReader(payload))
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var fe struct {
		Type    string `json:"errorType"`
		Message string `json:"errorMessage"`
	}
	if json.Unmarshal(body, &fe) == nil && fe.Type != "" {
		return nil, fe.Type, fe.Message
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("invoke: status %d: %s", resp.StatusCode, body)
	}
	return body, "", ""
}

func TestRIE(t *testing.T) {
	r := startRIE(t)
	direct := func(t *testing.T, extra map[string]any) DirectResponse {
		t.Helper()
		out, typ, msg := r.invoke(t, testRequest(t, extra))
		if typ != "" {
			t.Fatalf("function error %s: %s", typ, msg)
		}
		var resp DirectResponse
		if err := json.Unmarshal(out, &resp); err != nil || resp.Response == nil {
			t.Fatalf("reply %.300s: %v", out, err)
		}
		return resp
	}
	// Subtests run in order: the first invocation is the cold one.
	t.Run("cold direct invoke", func(t *testing.T) {
		resp := direct(t, nil)
		if !resp.Cold || resp.InitMS == nil || *resp.InitMS < 50 {
			t.Errorf("cold %v, init_ms %v: want a cold start of at least the 50ms init delay", resp.Cold, resp.InitMS)
		}
		if len(resp.Images) != 1 || resp.Seed != 42 || resp.Width != 64 {
			t.Errorf("reply %+v", resp.Response)
		}
		if _, err := png.Decode(bytes.NewReader(resp.Images[0].Data)); err != nil {
			t.Errorf("image: %v", err)
		}
	})
	t.Run("warm direct invoke", func(t *testing.T) {
		resp := direct(t, nil)
		if resp.Cold || resp.InitMS != nil {
			t.Errorf("second invocation: cold %v, init_ms %v", resp.Cold, resp.InitMS)
		}
	})
	t.Run("function URL", func(t *testing.T) {
		payload := httpEventPayload(t, "POST", "/v1/generate", "", map[string]string{"accept": "image/png", "content-type": "application/json"}, testRequest(t, nil), true)
		out, typ, msg := r.invoke(t, payload)
		if typ != "" {
			t.Fatalf("function error %s: %s", typ, msg)
		}
		var resp events.LambdaFunctionURLResponse
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || !resp.IsBase64Encoded || resp.Headers["Content-Type"] != "image/png" || resp.Headers[HeaderColdStart] != "false" {
			t.Fatalf("reply %d %v", resp.StatusCode, resp.Headers)
		}
		data, err := base64.StdEncoding.DecodeString(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(bytes.NewReader(data)); err != nil {
			t.Errorf("body: %v", err)
		}
	})
	t.Run("bad inputs", func(t *testing.T) {
		tests := []struct {
			name, payload, wantType, wantInReply string
		}{
			{"malformed JSON", `{"prompt": "x"`, "", "malformed JSON"},
			{"wrong type", `{"seed": "lucky"}`, "", `"field":"seed"`},
			{"unknown event shape", `{"Records": [{"eventSource": "aws:kinesis"}]}`, "UnsupportedEvent", "aws:kinesis"},
			{"REST API event", `{"httpMethod": "GET", "path": "/", "requestContext": {}}`, "UnsupportedEvent", "REST"},
			{"malformed SQS event", `{"Records": [{"eventSource": "aws:sqs", "body": 7}]}`, "MalformedEvent", "SQS"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				out, typ, msg := r.invoke(t, []byte(tt.payload))
				if typ != tt.wantType {
					t.Fatalf("error type %q (%s), want %q; reply %s", typ, msg, tt.wantType, out)
				}
				if !strings.Contains(string(out)+msg, tt.wantInReply) {
					t.Errorf("reply %s / %s lacks %q", out, msg, tt.wantInReply)
				}
			})
		}
	})
	t.Run("generator panic", func(t *testing.T) {
		_, typ, msg := r.invoke(t, testRequest(t, map[string]any{"prompt": fakegen.PromptPanic}))
		if typ != "InternalError" {
			t.Fatalf("error %q: %s", typ, msg)
		}
		if resp := direct(t, nil); resp.Cold {
			t.Errorf("the process restarted after a panic")
		}
	})
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		_, typ, msg := r.invoke(t, testRequest(t, map[string]any{"prompt": fakegen.PromptSlow, "num_inference_steps": 10}))
		if typ != "GenerationTimeout" || !strings.Contains(msg, "did not finish") {
			t.Fatalf("error %q: %s", typ, msg)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("the reply took %s, past the 3s function timeout", took)
		}
		if resp := direct(t, nil); resp.Cold {
			t.Errorf("the process restarted after a timeout")
		}
	})
	if !strings.Contains(r.out.String(), `"msg":"invocation"`) {
		t.Errorf("no invocation log lines in the output:\n%s", r.out)
	}
	if logs := r.out.String(); strings.Contains(logs, "a cat") || strings.Contains(logs, fakegen.PromptSlow) || strings.Contains(logs, fakegen.PromptPanic) {
		t.Errorf("the log holds prompt text:\n%s", r.out)
	}
}

// minio is a running MinIO server and a client of it.
type minio struct {
	endpoint, user, password string
	client                   *s3.Client
}

func startMinIO(t *testing.T) *minio {
	t.Helper()
	bin := tool(t, "CONTROLFN_MINIO", "minio")
	addr := freeAddr(t)
	m := &minio{endpoint: "http://" + addr, user: "u" + randomHex(t, 8), password: randomHex(t, 16)}
	out := startProcess(t, []string{"MINIO_ROOT_USER=" + m.user, "MINIO_ROOT_PASSWORD=" + m.password, "MINIO_BROWSER=off"},
		bin, "server", "--quiet", "--address", addr, "--console-address", freeAddr(t), t.TempDir())
	waitFor(t, "minio", out, func() bool {
		resp, err := http.Get(m.endpoint + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	m.client = s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(m.endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(m.user, m.password, ""),
	})
	return m
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func (m *minio) env() []string {
	return []string{
		EnvS3Endpoint + "=" + m.endpoint,
		"AWS_ACCESS_KEY_ID=" + m.user,
		"AWS_SECRET_ACCESS_KEY=" + m.password,
		"AWS_SESSION_TOKEN=",
		"AWS_PROFILE=",
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
	}
}

// useCredentials points this process's AWS SDK configuration at the
// server, for the test's duration.
func (m *minio) useCredentials(t *testing.T) {
	t.Helper()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": m.user, "AWS_SECRET_ACCESS_KEY": m.password, "AWS_SESSION_TOKEN": "",
		"AWS_PROFILE": "", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"AWS_REGION": "", "AWS_EC2_METADATA_DISABLED": "true",
	} {
		t.Setenv(k, v)
	}
}

func (m *minio) bucket(t *testing.T, name string) {
	t.Helper()
	if _, err := m.client.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("creating bucket %s: %v", name, err)
	}
}

func (m *minio) put(t *testing.T, bucket, key string, data []byte, meta map[string]string) {
	t.Helper()
	_, err := m.client.PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data), Metadata: meta,
	})
	if err != nil {
		t.Fatalf("putting %s/%s: %v", bucket, key, err)
	}
}

func (m *minio) get(t *testing.T, bucket, key string) []byte {
	t.Helper()
	out, err := m.client.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("getting %s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func (m *minio) keys(t *testing.T, bucket, prefix string) []string {
	t.Helper()
	out, err := m.client.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

func TestS3Store(t *testing.T) {
	m := startMinIO(t)
	m.bucket(t, "bkt")
	m.put(t, "bkt", "k", []byte("12345"), map[string]string{"Prompt": "a cat"})
	m.useCredentials(t)
	store, err := NewS3Store(t.Context(), S3Options{Endpoint: m.endpoint, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	obj, err := store.Get(ctx, "bkt", "k", 5)
	if err != nil || string(obj.Data) != "12345" || obj.Metadata["prompt"] != "a cat" {
		t.Errorf("Get = %+v, %v", obj, err)
	}
	if _, err := store.Get(ctx, "bkt", "k", 4); !errorsIs(err, ErrTooLarge) {
		t.Errorf("Get over the limit: %v", err)
	}
	if _, err := store.Get(ctx, "bkt", "missing", 4); !errorsIs(err, ErrNotFound) {
		t.Errorf("Get of a missing key: %v", err)
	}
	if _, err := store.Get(ctx, "no-such-bucket", "k", 4); !errorsIs(err, ErrNotFound) {
		t.Errorf("Get from a missing bucket: %v", err)
	}
	if err := store.Put(ctx, "bkt", "p", Object{Data: []byte("x"), ContentType: "image/png", Metadata: map[string]string{"seed": "1"}}); err != nil {
		t.Fatal(err)
	}
	if obj, err := store.Get(ctx, "bkt", "p", 1); err != nil || obj.ContentType != "image/png" || obj.Metadata["seed"] != "1" {
		t.Errorf("after Put: %+v, %v", obj, err)
	}
}

func TestRIEWithMinIO(t *testing.T) {
	m := startMinIO(t)
	m.bucket(t, "cf-in")
	m.bucket(t, "cf-out")
	r := startRIE(t, append(m.env(), EnvInputBucket+"=cf-in", EnvOutputBucket+"=cf-out")...)

	t.Run("SQS batch with a bad message", func(t *testing.T) {
		m.put(t, "cf-in", "edges/e.png", testPNG(t, 8, 8), nil)
		payload := sqsPayload(t, map[string][]byte{
			msgGood:  testRequest(t, nil),
			msgBad:   []byte(`{"prompt": "x", "steps": 3}`),
			msgOther: testRequest(t, map[string]any{"control_image": map[string]string{"key": "edges/e.png"}}),
		})
		out, typ, msg := r.invoke(t, payload)
		if typ != "" {
			t.Fatalf("function error %s: %s", typ, msg)
		}
		var resp events.SQSEventResponse
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatal(err)
		}
		if len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != msgBad {
			t.Fatalf("reply %s, want only %s failed", out, msgBad)
		}
		want := []string{"output/" + msgGood + ".json", "output/" + msgGood + ".png", "output/" + msgOther + ".json", "output/" + msgOther + ".png"}
		if got := m.keys(t, "cf-out", "output/"); !slices.Equal(got, want) {
			t.Errorf("outputs %v, want %v", got, want)
		}
		if _, err := png.Decode(bytes.NewReader(m.get(t, "cf-out", "output/"+msgGood+".png"))); err != nil {
			t.Errorf("output image: %v", err)
		}
	})

	t.Run("S3 event", func(t *testing.T) {
		m.put(t, "cf-in", "input/cat.png", testPNG(t, 8, 8), nil)
		m.put(t, "cf-in", "input/cat.png.json", []byte(`{"prompt": "a cat", "seed": 5, "width": 96}`), nil)
		m.put(t, "cf-in", "input/dog.png", testPNG(t, 8, 8), map[string]string{"prompt": "a dog", "seed": "6", "num-inference-steps": "3"})
		m.put(t, "cf-in", "input/bad.png", testPNG(t, 8, 8), map[string]string{"num-images": "99"})
		out, typ, msg := r.invoke(t, s3Payload(t, "ObjectCreated:Put", "cf-in", "input/cat.png", "input/dog.png", "input/bad.png", "input/cat.png.json", "output/x.png"))
		if typ != "" {
			t.Fatalf("function error %s: %s", typ, msg)
		}
		var sum S3Summary
		if err := json.Unmarshal(out, &sum); err != nil {
			t.Fatal(err)
		}
		var statuses []string
		for _, r := range sum.Records {
			statuses = append(statuses, r.Status)
		}
		if want := []string{S3Done, S3Done, S3Rejected, S3Ignored, S3Ignored}; !slices.Equal(statuses, want) {
			t.Fatalf("statuses %v, want %v; reply %s", statuses, want, out)
		}
		want := []string{"output/bad.error.json", "output/cat.json", "output/cat.png", "output/dog.json", "output/dog.png"}
		got := m.keys(t, "cf-out", "output/")
		for _, k := range want {
			if !slices.Contains(got, k) {
				t.Errorf("outputs %v lack %s", got, k)
			}
		}
		img, err := png.Decode(bytes.NewReader(m.get(t, "cf-out", "output/cat.png")))
		if err != nil || img.Bounds().Dx() != 96 {
			t.Errorf("output image: %v (%v)", err, img)
		}
		var rec OutputRecord
		if err := json.Unmarshal(m.get(t, "cf-out", "output/dog.json"), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Source == nil || rec.Source.Key != "input/dog.png" || rec.Seed != 6 || rec.Steps != 3 || rec.Images[0].Key != "output/dog.png" || rec.Images[0].Data != nil {
			t.Errorf("record %+v", rec)
		}
		if e := m.get(t, "cf-out", "output/bad.error.json"); !bytes.Contains(e, []byte(`"field": "num_images"`)) {
			t.Errorf("error record %s", e)
		}
	})
}

// A packed bundle in S3 is fetched and unpacked, verified, at init; a
// second init reuses it; a bad URI or a corrupt archive is an error.
func TestFetchBundle(t *testing.T) {
	m := startMinIO(t)
	m.bucket(t, "bundles")
	// A tiny valid bundle: one file and its manifest, written by artifacts.
	src := filepath.Join(t.TempDir(), "bundle")
	w, err := artifacts.NewWriter(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddBytes(artifacts.SchedulerConfigPath, []byte(`{"_class_name": "DDIMScheduler"}`)); err != nil {
		t.Fatal(err)
	}
	wf, err := w.AddBytes("weights/unet.safetensors", []byte("not really weights"))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := w.AddBytes("configs/unet.json", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(&artifacts.Manifest{ToolVersion: "test", DType: artifacts.DTypeFloat16,
		Sources: []artifacts.Source{{Path: "model", Role: "checkpoint", Size: 1, SHA256: strings.Repeat("0", 64)}},
		Buckets: []artifacts.Bucket{{Width: 64, Height: 64, Batch: 1}},
		Components: []artifacts.Component{{Name: "unet", Kind: artifacts.KindUNet, Config: cf.Path, Weights: wf.Path,
			Tensors: 1, Bytes: wf.Size, SHA256: wf.SHA256}}}); err != nil {
		t.Fatal(err)
	}
	var packed bytes.Buffer
	if _, err := artifacts.Pack(src, &packed, artifacts.PackOptions{}); err != nil {
		t.Fatal(err)
	}
	m.put(t, "bundles", "demo.tar.zst", packed.Bytes(), nil)
	m.put(t, "bundles", "bad.tar.zst", packed.Bytes()[:packed.Len()/2], nil)
	m.useCredentials(t)
	store, err := NewS3Store(t.Context(), S3Options{Endpoint: m.endpoint, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "fetched")
	b, err := store.FetchBundle(t.Context(), "s3://bundles/demo.tar.zst", dest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.Path(artifacts.SchedulerConfigPath)); err != nil {
		t.Errorf("unpacked bundle lacks its file: %v", err)
	}
	if _, err := store.FetchBundle(t.Context(), "s3://bundles/demo.tar.zst", dest); err != nil {
		t.Errorf("second init: %v", err)
	}
	if _, err := store.FetchBundle(t.Context(), "s3://bundles/bad.tar.zst", filepath.Join(t.TempDir(), "bad")); err == nil {
		t.Error("a truncated archive was accepted")
	}
	if _, err := store.FetchBundle(t.Context(), "s3://bundles", dest); err == nil {
		t.Error("a URI without a key was accepted")
	}
}
