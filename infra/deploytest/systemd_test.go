package deploytest

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unit is a parsed systemd unit file: section -> key -> values in order
// (a key may repeat, e.g. Environment=).
type unit map[string]map[string][]string

func parseUnit(data []byte) (unit, error) {
	u := unit{}
	section := ""
	var pending strings.Builder
	for i, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if pending.Len() == 0 && (line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";")) {
			continue
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			pending.WriteString(body + " ")
			continue
		}
		pending.WriteString(line)
		line = pending.String()
		pending.Reset()
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: malformed section header %q", i+1, line)
			}
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want Key=Value, got %q", i+1, line)
		}
		if section == "" {
			return nil, fmt.Errorf("line %d: %s outside a section", i+1, key)
		}
		key = strings.TrimSpace(key)
		u[section][key] = append(u[section][key], strings.TrimSpace(value))
	}
	return u, nil
}

// get is the value in effect (the last assignment).
func (u unit) get(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// environment is what the Environment= lines set.
func (u unit) environment() map[string]string {
	env := map[string]string{}
	for _, line := range u["Service"]["Environment"] {
		for _, assignment := range splitQuoted(line) {
			if k, v, ok := strings.Cut(unquote(assignment), "="); ok {
				env[k] = v
			}
		}
	}
	return env
}

// parseSystemdTime reads TimeoutStopSec-style values: "360", "6min", "90s".
func parseSystemdTime(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(strings.ReplaceAll(s, "min", "m"))
}

var envReference = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

// hardening are the sandboxing settings the unit must keep: the server
// reads a folder and listens on TCP, and needs nothing else.
var hardening = map[string]string{
	"NoNewPrivileges":         "yes",
	"ProtectSystem":           "strict",
	"ProtectHome":             "yes",
	"PrivateTmp":              "yes",
	"PrivateDevices":          "yes",
	"ProtectKernelTunables":   "yes",
	"ProtectKernelModules":    "yes",
	"ProtectControlGroups":    "yes",
	"RestrictSUIDSGID":        "yes",
	"RestrictNamespaces":      "yes",
	"LockPersonality":         "yes",
	"CapabilityBoundingSet":   "",
	"SystemCallArchitectures": "native",
}

// checkUnit checks infra/systemd/controlfn.service.
func checkUnit(data []byte) problems {
	var p problems
	u, err := parseUnit(data)
	if err != nil {
		p.addf("unit: %v", err)
		return p
	}
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			p.addf("no [%s] section", s)
		}
	}
	for s := range u {
		if s != "Unit" && s != "Service" && s != "Install" {
			p.addf("unexpected section [%s]", s)
		}
	}
	if len(p) > 0 {
		return p
	}
	if d, _ := u.get("Unit", "Description"); d == "" {
		p.addf("[Unit] no Description")
	}
	for _, key := range []string{"After", "Wants"} {
		if v, _ := u.get("Unit", key); !strings.Contains(v, "network-online.target") {
			p.addf("[Unit] %s must include network-online.target (the server binds a network address)", key)
		}
	}
	if v, _ := u.get("Install", "WantedBy"); v != "multi-user.target" {
		p.addf("[Install] WantedBy=%q, want multi-user.target", v)
	}

	// ExecStart: controlfn serve --bundle DIR --addr HOST:PORT, with every
	// variable it uses given a default.
	exec, _ := u.get("Service", "ExecStart")
	argv := strings.Fields(strings.TrimLeft(exec, "-@:+!"))
	if len(argv) < 2 || !strings.HasPrefix(argv[0], "/") || filepath.Base(argv[0]) != "controlfn" || argv[1] != "serve" {
		p.addf("[Service] ExecStart=%q: want /ABSOLUTE/PATH/controlfn serve ...", exec)
	}
	for _, flag := range []string{"--bundle", "--addr"} {
		i := indexOf(argv, flag)
		if i < 0 || i+1 >= len(argv) || strings.HasPrefix(argv[i+1], "--") {
			p.addf("[Service] ExecStart: want %s VALUE", flag)
		}
	}
	env := u.environment()
	for _, m := range envReference.FindAllStringSubmatch(exec, -1) {
		if _, ok := env[m[1]]; !ok {
			p.addf("[Service] ExecStart uses $%s, which no Environment= line defaults", m[1])
		}
	}
	if !strings.Contains(env["GODEBUG"], "asyncpreemptoff=1") {
		p.addf("[Service] want Environment=GODEBUG=asyncpreemptoff=1 (what the simd build needs; saves the binary's re-exec)")
	}
	if v, _ := u.get("Service", "Restart"); v != "on-failure" {
		p.addf("[Service] Restart=%q, want on-failure", v)
	}
	if user, _ := u.get("Service", "User"); user == "" || user == "root" {
		if dyn, _ := u.get("Service", "DynamicUser"); dyn != "yes" {
			p.addf("[Service] want an unprivileged User= (or DynamicUser=yes)")
		}
	}
	stop, _ := u.get("Service", "TimeoutStopSec")
	if d, err := parseSystemdTime(stop); err != nil || d < 330*time.Second {
		p.addf("[Service] TimeoutStopSec=%q: want >= 330s, the server's shutdown wait for a running generation", stop)
	}
	for _, key := range sortedKeys(hardening) {
		if v, ok := u.get("Service", key); !ok || v != hardening[key] {
			p.addf("[Service] want %s=%s (hardening)", key, hardening[key])
		}
	}
	for _, key := range []string{"RestrictAddressFamilies", "SystemCallFilter"} {
		if _, ok := u.get("Service", key); !ok {
			p.addf("[Service] want %s= (hardening)", key)
		}
	}
	return p
}

func indexOf(s []string, v string) int {
	for i, e := range s {
		if e == v {
			return i
		}
	}
	return -1
}

func TestSystemdUnit(t *testing.T) {
	root := repoRoot(t)
	data := readFile(t, filepath.Join(root, "infra", "systemd", "controlfn.service"))
	if p := checkUnit(data); len(p) > 0 {
		t.Errorf("infra/systemd/controlfn.service:\n  %s", strings.Join(p, "\n  "))
	}
	// The example environment file sets only what the unit reads.
	u, err := parseUnit(data)
	if err != nil {
		t.Fatal(err)
	}
	env := u.environment()
	for i, line := range strings.Split(string(readFile(t, filepath.Join(root, "infra", "systemd", "controlfn.env"))), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		if _, known := env[k]; !ok || !known {
			t.Errorf("controlfn.env:%d: %q sets nothing the unit uses (%v)", i+1, line, sortedKeys(env))
		}
	}
}

// TestSystemdUnitMutations proves checkUnit is not vacuous.
func TestSystemdUnitMutations(t *testing.T) {
	root := repoRoot(t)
	orig := string(readFile(t, filepath.Join(root, "infra", "systemd", "controlfn.service")))
	tests := []struct {
		name, old, new, want string
	}{
		{"no Install", "[Install]\nWantedBy=multi-user.target\n", "", "no [Install]"},
		{"not serve", "controlfn serve --bundle", "controlfn generate --bundle", "ExecStart"},
		{"relative binary", "ExecStart=/usr/local/bin/controlfn", "ExecStart=controlfn", "ExecStart"},
		{"no addr", " --addr ${CONTROLFN_ADDR}", "", "--addr VALUE"},
		{"undefined variable", "--bundle ${CONTROLFN_BUNDLE}", "--bundle ${BUNDLE}", "uses $BUNDLE"},
		{"always restart", "Restart=on-failure", "Restart=always", "Restart="},
		{"privileges", "NoNewPrivileges=yes", "NoNewPrivileges=no", "NoNewPrivileges=yes"},
		{"writable system", "ProtectSystem=strict", "ProtectSystem=false", "ProtectSystem=strict"},
		{"root", "User=controlfn\n", "", "unprivileged User"},
		{"short stop timeout", "TimeoutStopSec=360", "TimeoutStopSec=30", "TimeoutStopSec"},
		{"stray line", "[Service]\n", "[Service]\nnonsense\n", "Key=Value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expectProblem(t, checkUnit([]byte(replaceOnce(t, orig, tc.old, tc.new))), tc.want)
		})
	}
}
