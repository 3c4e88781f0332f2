package lambda

import (
	"strings"
	"testing"
	"time"
)

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    func(Config) bool
		wantErr string
	}{
		{"defaults", nil, func(c Config) bool { return c == DefaultConfig() }, ""},
		{"everything", map[string]string{
			EnvInputBucket: "in", EnvInputPrefix: "uploads/", EnvOutputBucket: "out", EnvOutputPrefix: "",
			EnvS3Endpoint: "http://127.0.0.1:9000", EnvURLObjectKeys: "1", EnvDeadlineMargin: "750ms", EnvLogPrompts: "false",
		}, func(c Config) bool {
			return c.InputBucket == "in" && c.InputPrefix == "uploads/" && c.OutputBucket == "out" && c.OutputPrefix == "" &&
				c.S3Endpoint == "http://127.0.0.1:9000" && c.S3PathStyle && c.URLObjectKeys && c.DeadlineMargin == 750*time.Millisecond
		}, ""},
		{"path style off", map[string]string{EnvS3Endpoint: "https://s3.example.com", EnvS3PathStyle: "false"},
			func(c Config) bool { return !c.S3PathStyle }, ""},
		{"no endpoint: virtual hosts", map[string]string{EnvInputPrefix: ""}, func(c Config) bool { return !c.S3PathStyle && c.InputPrefix == "" }, ""},
		{"bad bool", map[string]string{EnvURLObjectKeys: "yes please"}, nil, EnvURLObjectKeys},
		{"bad duration", map[string]string{EnvDeadlineMargin: "2"}, nil, EnvDeadlineMargin},
		{"negative duration", map[string]string{EnvDeadlineMargin: "-1s"}, nil, EnvDeadlineMargin},
		{"outputs among inputs", map[string]string{EnvOutputPrefix: ""}, nil, "output prefix"},
		{"inputs under the output prefix", map[string]string{EnvOutputPrefix: "data/", EnvInputPrefix: "data/in/"}, nil, "output prefix"},
		{"same prefixes, other bucket", map[string]string{EnvOutputPrefix: "", EnvOutputBucket: "out"}, func(c Config) bool { return c.OutputPrefix == "" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := configFrom(func(k string) (string, bool) {
				v, ok := tt.env[k]
				return v, ok
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(got) {
				t.Errorf("config %+v", got)
			}
		})
	}
}
