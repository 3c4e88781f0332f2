package deploytest

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The Lambda base image the function image must derive from: the provided
// (OS-only) runtime, where the bootstrap is our binary.
const lambdaBaseImage = "public.ecr.aws/lambda/provided:al2023"

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY...
	args string
	line int
}

type stage struct {
	name   string // the AS name, or the index as text
	base   string // FROM image or stage name, build args expanded
	instrs []instruction
}

type dockerfile struct {
	args   map[string]string // ARGs before the first FROM, with defaults
	stages []*stage
}

// parseDockerfile reads the instructions docker would, without the
// parser directives and escapes we do not use.
func parseDockerfile(data []byte) (*dockerfile, error) {
	df := &dockerfile{args: map[string]string{}}
	var cur *stage
	var pending strings.Builder
	start := 0
	lines := strings.Split(string(data), "\n")
	for i, raw := range lines {
		line := strings.TrimSpace(raw)
		if pending.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if pending.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // comments inside a continued instruction are dropped
		}
		if pending.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			pending.WriteString(body + " ")
			continue
		}
		pending.WriteString(line)
		text := pending.String()
		pending.Reset()
		cmd, args, _ := strings.Cut(text, " ")
		ins := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		switch {
		case ins.cmd == "FROM":
			fields := strings.Fields(ins.args)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				fields = fields[1:]
			}
			if len(fields) != 1 && !(len(fields) == 3 && strings.EqualFold(fields[1], "AS")) {
				return nil, fmt.Errorf("line %d: FROM %s: want IMAGE [AS NAME]", start, ins.args)
			}
			cur = &stage{name: strconv.Itoa(len(df.stages)), base: df.expand(fields[0])}
			if len(fields) == 3 {
				cur.name = fields[2]
			}
			df.stages = append(df.stages, cur)
		case cur == nil && ins.cmd == "ARG":
			name, def, _ := strings.Cut(ins.args, "=")
			df.args[name] = unquote(def)
		case cur == nil:
			return nil, fmt.Errorf("line %d: %s before the first FROM", start, ins.cmd)
		default:
			cur.instrs = append(cur.instrs, ins)
		}
	}
	if pending.Len() > 0 {
		return nil, fmt.Errorf("the file ends inside a continued line")
	}
	if len(df.stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return df, nil
}

// expand substitutes the global ARGs' defaults in ${NAME} and $NAME.
func (df *dockerfile) expand(s string) string {
	for name, v := range df.args {
		s = strings.ReplaceAll(s, "${"+name+"}", v)
		s = strings.ReplaceAll(s, "$"+name, v)
	}
	return s
}

func (df *dockerfile) stage(name string) *stage {
	for _, s := range df.stages {
		if s.name == name {
			return s
		}
	}
	return nil
}

// root follows a stage's FROM through earlier stages to an image.
func (df *dockerfile) root(s *stage) string {
	for i := 0; i < len(df.stages); i++ {
		parent := df.stage(s.base)
		if parent == nil || parent == s {
			return s.base
		}
		s = parent
	}
	return s.base
}

// chain is the stage and the stages it is built FROM, nearest first.
func (df *dockerfile) chain(s *stage) []*stage {
	out := []*stage{s}
	for parent := df.stage(s.base); parent != nil && len(out) <= len(df.stages); parent = df.stage(parent.base) {
		out = append(out, parent)
	}
	return out
}

// env is the value of an ENV in the stage or those it derives from.
func (df *dockerfile) env(s *stage, key string) (string, bool) {
	for _, st := range df.chain(s) {
		for i := len(st.instrs) - 1; i >= 0; i-- {
			if st.instrs[i].cmd != "ENV" {
				continue
			}
			if v, ok := parseEnv(st.instrs[i].args)[key]; ok {
				return v, true
			}
		}
	}
	return "", false
}

// last is the stage's (or its ancestors') last instruction cmd, e.g. the
// ENTRYPOINT in effect.
func (df *dockerfile) last(s *stage, cmd string) (instruction, bool) {
	for _, st := range df.chain(s) {
		for i := len(st.instrs) - 1; i >= 0; i-- {
			if st.instrs[i].cmd == cmd {
				return st.instrs[i], true
			}
		}
	}
	return instruction{}, false
}

func (s *stage) all(cmd string) []instruction {
	var out []instruction
	for _, ins := range s.instrs {
		if ins.cmd == cmd {
			out = append(out, ins)
		}
	}
	return out
}

// parseEnv reads ENV k=v [k2="v 2"...] and the legacy ENV k v.
func parseEnv(args string) map[string]string {
	out := map[string]string{}
	if !strings.Contains(strings.Fields(args + " x")[0], "=") {
		k, v, _ := strings.Cut(args, " ")
		out[k] = strings.TrimSpace(v)
		return out
	}
	for _, tok := range splitQuoted(args) {
		k, v, _ := strings.Cut(tok, "=")
		out[k] = unquote(v)
	}
	return out
}

// splitQuoted splits on spaces outside double quotes.
func splitQuoted(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case r == ' ' && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

func unquote(s string) string {
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return s
}

// execForm parses the JSON array form of ENTRYPOINT and CMD; the shell
// form is refused because it runs the process under /bin/sh -c, which
// swallows SIGTERM (and distroless has no shell).
func execForm(ins instruction) ([]string, error) {
	var argv []string
	if err := json.Unmarshal([]byte(ins.args), &argv); err != nil || len(argv) == 0 {
		return nil, fmt.Errorf("line %d: %s %s: want the exec form [\"prog\", \"arg\"...]", ins.line, ins.cmd, ins.args)
	}
	return argv, nil
}

// copyArgs splits COPY [--from=X] [--chmod...] SRC... DEST.
func copyArgs(ins instruction) (from string, srcs []string, dest string) {
	fields := strings.Fields(ins.args)
	for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
		if v, ok := strings.CutPrefix(fields[0], "--from="); ok {
			from = v
		}
		fields = fields[1:]
	}
	if len(fields) < 2 {
		return from, nil, ""
	}
	return from, fields[:len(fields)-1], fields[len(fields)-1]
}

// The stages the deployment files name: the SAM template builds
// lambda-baked (or lambda), the Kubernetes Deployment runs edge.
var requiredStages = []string{"build", "edge", "lambda", "lambda-baked"}

// checkDockerfile checks infra/Dockerfile; the facts are go.mod's Go
// version, which the build image must match.
func checkDockerfile(data []byte, facts codeFacts) problems {
	var p problems
	df, err := parseDockerfile(data)
	if err != nil {
		p.addf("Dockerfile: %v", err)
		return p
	}
	seen := map[string]bool{}
	for _, s := range df.stages {
		if seen[s.name] {
			p.addf("Dockerfile: stage %q defined twice", s.name)
		}
		if !seen[s.base] {
			// An image, not an earlier stage: pin it.
			ref := s.base[strings.LastIndex(s.base, "/")+1:]
			if !strings.Contains(ref, ":") && !strings.Contains(ref, "@") || strings.HasSuffix(ref, ":latest") || strings.Contains(s.base, "$") {
				p.addf("Dockerfile: stage %s: FROM %s: want a pinned tag (no :latest, no unset ARG)", s.name, s.base)
			}
		}
		for _, ins := range s.all("COPY") {
			from, srcs, dest := copyArgs(ins)
			if len(srcs) == 0 || dest == "" {
				p.addf("Dockerfile: line %d: COPY %s: want SRC... DEST", ins.line, ins.args)
			}
			if from != "" && !seen[from] {
				p.addf("Dockerfile: line %d: COPY --from=%s: no earlier stage of that name", ins.line, from)
			}
		}
		seen[s.name] = true
	}
	for _, name := range requiredStages {
		if df.stage(name) == nil {
			p.addf("Dockerfile: no stage %q (want stages %v)", name, requiredStages)
		}
	}
	if len(p) > 0 {
		return p
	}

	// build: golang at go.mod's version, simd, static.
	build := df.stage("build")
	if want := "golang:" + facts.goVersion; !strings.HasPrefix(build.base, want) {
		p.addf("Dockerfile: build stage FROM %s: want %s* (go.mod says go %s)", build.base, want, facts.goVersion)
	}
	for key, want := range map[string]string{"GOEXPERIMENT": "simd", "CGO_ENABLED": "0"} {
		if v, ok := df.env(build, key); !ok || v != want {
			p.addf("Dockerfile: build stage: want ENV %s=%s (got %q)", key, want, v)
		}
	}
	binary := ""
	for _, ins := range build.all("RUN") {
		if strings.Contains(ins.args, "go build") && strings.Contains(ins.args, "./cmd/controlfn") {
			if f := strings.Fields(ins.args); len(f) > 0 {
				for i := range f[:len(f)-1] {
					if f[i] == "-o" {
						binary = f[i+1]
					}
				}
			}
		}
	}
	if binary == "" {
		p.addf("Dockerfile: build stage: no RUN go build -o BINARY ./cmd/controlfn")
	}
	// copiedBinary is where a stage copies the built binary to.
	copiedBinary := func(s *stage) string {
		for _, st := range df.chain(s) {
			for _, ins := range st.all("COPY") {
				if from, srcs, dest := copyArgs(ins); from == "build" && len(srcs) == 1 && srcs[0] == binary {
					return dest
				}
			}
		}
		return ""
	}

	// lambda: the provided runtime with our binary as its bootstrap.
	for _, name := range []string{"lambda", "lambda-baked"} {
		s := df.stage(name)
		if root := df.root(s); root != lambdaBaseImage {
			p.addf("Dockerfile: stage %s derives from %s, want %s", name, root, lambdaBaseImage)
		}
		switch dest := copiedBinary(s); dest {
		case "${LAMBDA_RUNTIME_DIR}/bootstrap", "$LAMBDA_RUNTIME_DIR/bootstrap", "/var/runtime/bootstrap":
		default:
			p.addf("Dockerfile: stage %s copies the binary to %q, want ${LAMBDA_RUNTIME_DIR}/bootstrap", name, dest)
		}
		for _, cmd := range []string{"ENTRYPOINT", "CMD"} {
			if ins, ok := df.last(s, cmd); !ok {
				p.addf("Dockerfile: stage %s has no %s", name, cmd)
			} else if _, err := execForm(ins); err != nil {
				p.addf("Dockerfile: %v", err)
			}
		}
		if v, _ := df.env(s, "GODEBUG"); !strings.Contains(v, "asyncpreemptoff=1") {
			p.addf("Dockerfile: stage %s: want ENV GODEBUG=asyncpreemptoff=1", name)
		}
		if _, ok := df.env(s, "CONTROLFN_BUNDLE"); !ok {
			p.addf("Dockerfile: stage %s: no ENV CONTROLFN_BUNDLE", name)
		}
	}
	// lambda-baked: the bundle folder of a build arg, where the ENV says.
	baked := df.stage("lambda-baked")
	if baked.base != "lambda" {
		p.addf("Dockerfile: lambda-baked FROM %s, want FROM lambda", baked.base)
	}
	bundleDest := ""
	for _, ins := range baked.all("COPY") {
		if from, srcs, dest := copyArgs(ins); from == "" && len(srcs) == 1 && strings.Contains(srcs[0], "BUNDLE_DIR") {
			bundleDest = dest
		}
	}
	hasArg := false
	for _, ins := range baked.all("ARG") {
		hasArg = hasArg || strings.HasPrefix(ins.args, "BUNDLE_DIR")
	}
	if !hasArg || bundleDest == "" {
		p.addf("Dockerfile: lambda-baked: want ARG BUNDLE_DIR and COPY ${BUNDLE_DIR} DEST")
	} else if v, _ := df.env(baked, "CONTROLFN_BUNDLE"); v != bundleDest {
		p.addf("Dockerfile: lambda-baked: ENV CONTROLFN_BUNDLE=%q, but the bundle is copied to %q", v, bundleDest)
	}
	// `docker build` without --target gives the Lambda image.
	if last := df.stages[len(df.stages)-1]; df.root(last) != lambdaBaseImage {
		p.addf("Dockerfile: the default (last) stage %s is not a Lambda image", last.name)
	}

	// edge: controlfn serve, the binary where the Deployment runs it.
	edge := df.stage("edge")
	if ins, ok := df.last(edge, "ENTRYPOINT"); !ok {
		p.addf("Dockerfile: stage edge has no ENTRYPOINT")
	} else if argv, err := execForm(ins); err != nil {
		p.addf("Dockerfile: %v", err)
	} else if len(argv) < 2 || argv[0] != copiedBinary(edge) || argv[1] != "serve" {
		p.addf("Dockerfile: stage edge: ENTRYPOINT %v, want [%q, \"serve\"]", argv, copiedBinary(edge))
	}
	if len(edge.all("EXPOSE")) == 0 {
		p.addf("Dockerfile: stage edge: no EXPOSE")
	}
	return p
}

// edgeFacts is what the Kubernetes files must match in the edge image.
type edgeFacts struct {
	binary string // where the edge stage has the controlfn binary
	ports  map[string]bool
}

func dockerEdgeFacts(t testing.TB, data []byte) edgeFacts {
	t.Helper()
	df, err := parseDockerfile(data)
	if err != nil {
		t.Fatal(err)
	}
	edge := df.stage("edge")
	if edge == nil {
		t.Fatal("Dockerfile: no edge stage")
	}
	f := edgeFacts{ports: map[string]bool{}}
	if ins, ok := df.last(edge, "ENTRYPOINT"); ok {
		if argv, err := execForm(ins); err == nil {
			f.binary = argv[0]
		}
	}
	for _, ins := range edge.all("EXPOSE") {
		for _, port := range strings.Fields(ins.args) {
			f.ports[strings.TrimSuffix(port, "/tcp")] = true
		}
	}
	return f
}

func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	data := readFile(t, filepath.Join(root, "infra", "Dockerfile"))
	facts := loadCodeFacts(t, root)
	if p := checkDockerfile(data, facts); len(p) > 0 {
		t.Errorf("infra/Dockerfile:\n  %s", strings.Join(p, "\n  "))
	}
	df, err := parseDockerfile(data)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range df.stages {
		names = append(names, s.name+"<-"+s.base)
	}
	t.Logf("stages: %s", strings.Join(names, ", "))
}

// TestDockerfileMutations proves checkDockerfile is not vacuous.
func TestDockerfileMutations(t *testing.T) {
	root := repoRoot(t)
	orig := string(readFile(t, filepath.Join(root, "infra", "Dockerfile")))
	facts := loadCodeFacts(t, root)
	tests := []struct {
		name, old, new, want string
	}{
		{"no simd", "ENV GOEXPERIMENT=simd", "ENV GOEXPERIMENT=none", "GOEXPERIMENT=simd"},
		{"cgo on", "    CGO_ENABLED=0 \\", "    CGO_ENABLED=1 \\", "CGO_ENABLED=0"},
		{"other Lambda base", "FROM public.ecr.aws/lambda/provided:al2023 AS lambda", "FROM public.ecr.aws/lambda/provided:al2 AS lambda", lambdaBaseImage},
		{"unpinned base", "FROM public.ecr.aws/lambda/provided:al2023 AS lambda", "FROM public.ecr.aws/lambda/provided AS lambda", "pinned"},
		{"no build stage", "AS build\n", "AS builder\n", `no stage "build"`},
		{"bootstrap elsewhere", "/out/controlfn ${LAMBDA_RUNTIME_DIR}/bootstrap", "/out/controlfn /usr/local/bin/controlfn", "bootstrap"},
		{"no lambda entrypoint", `ENTRYPOINT ["/lambda-entrypoint.sh"]`, "", "has no ENTRYPOINT"},
		{"shell-form cmd", `CMD ["controlfn"]`, "CMD controlfn", "exec form"},
		{"copy from missing stage", "COPY --from=build /out/controlfn /usr/local/bin/controlfn", "COPY --from=biuld /out/controlfn /usr/local/bin/controlfn", "no earlier stage"},
		{"baked path mismatch", "ENV CONTROLFN_BUNDLE=/opt/controlfn/bundle", "ENV CONTROLFN_BUNDLE=/opt/bundle", "ENV CONTROLFN_BUNDLE"},
		{"edge not serving", `ENTRYPOINT ["/usr/local/bin/controlfn", "serve"]`, `ENTRYPOINT ["/usr/local/bin/controlfn", "generate"]`, "serve"},
		{"old Go", "ARG GO_VERSION=" + facts.goVersion, "ARG GO_VERSION=1.22", "go.mod"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mutated := replaceOnce(t, orig, tc.old, tc.new)
			expectProblem(t, checkDockerfile([]byte(mutated), facts), tc.want)
		})
	}
}
