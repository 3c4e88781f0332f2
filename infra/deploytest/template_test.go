package deploytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"github.com/awslabs/goformation/v7/cloudformation/serverless"
	"github.com/awslabs/goformation/v7/intrinsics"
	"gopkg.in/yaml.v3"
)

// Limits of CPU Lambda functions and the model's footprint, in MB and
// seconds: the sizing the template's parameters must respect.
const (
	lambdaMaxMemoryMB    = 10240
	lambdaMaxTimeoutS    = 900
	lambdaMinEphemeralMB = 512
	lambdaMaxEphemeralMB = 10240
	// An SD1.5 + ControlNet fp16 bundle on disk (~2.7 GB).
	bundleMB = 2765
	// Bounds above the measured peak RSS of a 512x512 generation
	// (docs/BENCHMARKS.md) with the weights kept fp16 on the device
	// (3.3 GiB) and widened to fp32 (6.1 GiB), with headroom.
	fp16RSSMB = 5500
	fp32RSSMB = 8100
	// A generation takes minutes on CPU.
	minTimeoutS = 300
)

// The S3 keys the handler takes as control images (function/lambda).
var controlImageSuffixes = []string{".png", ".jpg", ".jpeg"}

// Pseudo parameters a Ref or ${} may name.
var pseudoParameters = map[string]bool{
	"AWS::AccountId": true, "AWS::NotificationARNs": true, "AWS::NoValue": true, "AWS::Partition": true,
	"AWS::Region": true, "AWS::StackId": true, "AWS::StackName": true, "AWS::URLSuffix": true,
}

// getAttributes are the Fn::GetAtt attributes of the resource types the
// template may use; a type missing here is reported, so that the list
// grows with the template instead of letting any attribute through.
var getAttributes = map[string][]string{
	"AWS::Serverless::Function": {"Arn"},
	"AWS::Lambda::Url":          {"FunctionUrl", "FunctionArn"},
	"AWS::SQS::Queue":           {"Arn", "QueueName", "QueueUrl"},
	"AWS::S3::Bucket":           {"Arn", "DomainName", "DualStackDomainName", "RegionalDomainName", "WebsiteURL"},
	"AWS::IAM::Role":            {"Arn", "RoleId"},
	"AWS::Logs::LogGroup":       {"Arn"},
}

// samTemplate is template.yaml seen three ways.
type samTemplate struct {
	// raw keeps the intrinsics as written, in long form ({"Ref": "X"},
	// {"Fn::Sub": "..."}): the wiring.
	raw map[string]any
	// typed is goformation's model (SAM resources included) after
	// resolving: a Ref to a parameter is its default, a Ref to a resource
	// "ref:Name", a GetAtt "getatt:Name.Attr", conditions are evaluated.
	typed *cloudformation.Template
	// resolved is the same resolution as a generic tree, for the SAM
	// properties goformation v7 has no field for (FunctionResponseTypes).
	resolved map[string]any
}

func parseTemplate(data []byte) (*samTemplate, error) {
	var st samTemplate
	rawJSON, err := intrinsics.ProcessYAML(data, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(rawJSON, &st.raw); err != nil {
		return nil, err
	}
	if st.typed, err = goformation.ParseYAMLWithOptions(data, resolveOptions()); err != nil {
		return nil, fmt.Errorf("goformation: %w", err)
	}
	resolvedJSON, err := intrinsics.ProcessYAML(data, resolveOptions())
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(resolvedJSON, &st.resolved); err != nil {
		return nil, err
	}
	return &st, nil
}

func resolveOptions() *intrinsics.ProcessorOptions {
	return &intrinsics.ProcessorOptions{
		EvaluateConditions: true,
		IntrinsicHandlerOverrides: map[string]intrinsics.IntrinsicHandler{
			"Ref":        resolveRef,
			"Fn::GetAtt": resolveGetAtt,
			"Fn::Sub":    resolveSub,
		},
	}
}

// resolveRef: parameters give their default (so that typed fields get
// values), resources a marker that names them (so that wiring can be
// asserted on the typed model), AWS::NoValue removes the property.
func resolveRef(_ string, input, template any) any {
	name, ok := input.(string)
	if !ok {
		return nil
	}
	if name == "AWS::NoValue" {
		return nil
	}
	if params, ok := lookup(template, "Parameters").(map[string]any); ok {
		if p, ok := params[name].(map[string]any); ok {
			return p["Default"]
		}
	}
	if pseudoParameters[name] {
		return intrinsics.Ref("Ref", name, template)
	}
	return "ref:" + name
}

func resolveGetAtt(_ string, input, _ any) any {
	if res, attr, ok := getAttTarget(input); ok {
		return "getatt:" + res + "." + attr
	}
	return nil
}

var subVariable = regexp.MustCompile(`\$\{([^}]*)\}`)

func resolveSub(_ string, input, template any) any {
	src, vars := subParts(input)
	return subVariable.ReplaceAllStringFunc(src, func(m string) string {
		name := m[2 : len(m)-1]
		if strings.HasPrefix(name, "!") {
			return "${" + name[1:] + "}"
		}
		if v, ok := vars[name]; ok {
			return fmt.Sprint(v)
		}
		if res, attr, ok := strings.Cut(name, "."); ok {
			return "getatt:" + res + "." + attr
		}
		return fmt.Sprint(resolveRef("Ref", name, template))
	})
}

// subParts splits Fn::Sub's string or [string, {vars}] forms.
func subParts(input any) (string, map[string]any) {
	switch v := input.(type) {
	case string:
		return v, nil
	case []any:
		if len(v) == 2 {
			s, _ := v[0].(string)
			vars, _ := v[1].(map[string]any)
			return s, vars
		}
	}
	return "", nil
}

// getAttTarget reads ["Res", "Attr"] and the short form's "Res.Attr".
func getAttTarget(input any) (res, attr string, ok bool) {
	switch v := input.(type) {
	case string:
		return strings.Cut(v, ".")
	case []any:
		if len(v) == 2 {
			res, ok1 := v[0].(string)
			attr, ok2 := v[1].(string)
			return res, attr, ok1 && ok2
		}
	}
	return "", "", false
}

// lookup walks maps by key; nil when a step is missing.
func lookup(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// intrinsic returns the function name and argument of {"Ref": x} and
// {"Fn::...": x}.
func intrinsic(v any) (string, any, bool) {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return "", nil, false
	}
	for k, arg := range m {
		if k == "Ref" || k == "Condition" || strings.HasPrefix(k, "Fn::") {
			return k, arg, true
		}
	}
	return "", nil, false
}

// refTo returns the name v is a {"Ref": name} to.
func refTo(v any) (string, bool) {
	if fn, arg, ok := intrinsic(v); ok && fn == "Ref" {
		s, ok := arg.(string)
		return s, ok
	}
	return "", false
}

// getAttOf returns the resource and attribute of {"Fn::GetAtt": ...}.
func getAttOf(v any) (string, string, bool) {
	if fn, arg, ok := intrinsic(v); ok && fn == "Fn::GetAtt" {
		return getAttTarget(arg)
	}
	return "", "", false
}

// subString returns the template string of {"Fn::Sub": ...}.
func subString(v any) (string, bool) {
	if fn, arg, ok := intrinsic(v); ok && fn == "Fn::Sub" {
		s, _ := subParts(arg)
		return s, s != ""
	}
	return "", false
}

// exprString renders a raw value for messages and comparisons.
func exprString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// containsRef reports whether v holds a Ref to name anywhere (for example
// in one branch of an Fn::If).
func containsRef(v any, name string) bool {
	found := false
	walk(v, func(node any) {
		if r, ok := refTo(node); ok && r == name {
			found = true
		}
	})
	return found
}

func walk(v any, visit func(any)) {
	visit(v)
	switch n := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(n) {
			walk(n[k], visit)
		}
	case []any:
		for _, e := range n {
			walk(e, visit)
		}
	}
}

// templateFacts is what the template must agree with outside itself.
type templateFacts struct {
	code       codeFacts
	root       string // the repository, where Metadata.Dockerfile lives
	dockerfile []byte
}

// templateChecker holds the parsed template and the problems found.
type templateChecker struct {
	st       *samTemplate
	f        templateFacts
	p        problems
	params   map[string]map[string]any // raw Parameters
	types    map[string]string         // logical id -> type, SAM's implicit resources included
	resource map[string]map[string]any // raw Resources
}

// checkTemplate is the whole check of template.yaml: every test, and every
// mutation, goes through it.
func checkTemplate(data []byte, f templateFacts) problems {
	st, err := parseTemplate(data)
	if err != nil {
		return problems{fmt.Sprintf("template does not parse: %v", err)}
	}
	c := &templateChecker{st: st, f: f, params: map[string]map[string]any{}, types: map[string]string{}, resource: map[string]map[string]any{}}
	if tr := exprString(st.raw["Transform"]); !strings.Contains(tr, "AWS::Serverless-2016-10-31") {
		c.p.addf("Transform: want AWS::Serverless-2016-10-31 (got %s)", tr)
	}
	if ps, ok := st.raw["Parameters"].(map[string]any); ok {
		for name, v := range ps {
			c.params[name], _ = v.(map[string]any)
		}
	}
	res, _ := st.raw["Resources"].(map[string]any)
	for name, v := range res {
		r, _ := v.(map[string]any)
		c.resource[name] = r
		c.types[name], _ = r["Type"].(string)
		// SAM generates <Function>Url for a FunctionUrlConfig.
		if c.types[name] == "AWS::Serverless::Function" && lookup(r, "Properties", "FunctionUrlConfig") != nil {
			c.types[name+"Url"] = "AWS::Lambda::Url"
		}
	}
	c.checkReferences()
	c.checkFunction()
	return c.p
}

// checkReferences: every Ref, GetAtt, ${} in Fn::Sub, condition and
// DependsOn names something that exists, and the resources form no cycle.
func (c *templateChecker) checkReferences() {
	conditions, _ := c.st.raw["Conditions"].(map[string]any)
	deps := map[string]map[string]bool{}
	check := func(where, from string, node any) {
		dep := func(to string) {
			if from != "" && c.types[to] != "" {
				if deps[from] == nil {
					deps[from] = map[string]bool{}
				}
				deps[from][to] = true
			}
		}
		resolves := func(name string) bool {
			return c.params[name] != nil || pseudoParameters[name] || c.types[name] != ""
		}
		walk(node, func(v any) {
			fn, arg, ok := intrinsic(v)
			if !ok {
				return
			}
			switch fn {
			case "Ref":
				name, _ := arg.(string)
				if !resolves(name) {
					c.p.addf("%s: unresolved Ref %q (no such parameter, resource or pseudo parameter)", where, name)
				}
				dep(name)
			case "Fn::GetAtt":
				res, attr, ok := getAttTarget(arg)
				switch {
				case !ok:
					c.p.addf("%s: malformed Fn::GetAtt %s", where, exprString(arg))
				case c.types[res] == "":
					c.p.addf("%s: unresolved GetAtt %s.%s (no such resource)", where, res, attr)
				case getAttributes[c.types[res]] == nil:
					c.p.addf("%s: GetAtt %s.%s: type %s is not in this test's attribute table", where, res, attr, c.types[res])
				case !slices.Contains(getAttributes[c.types[res]], attr):
					c.p.addf("%s: GetAtt %s.%s: %s has no attribute %s", where, res, attr, c.types[res], attr)
				}
				dep(res)
			case "Fn::Sub":
				src, vars := subParts(arg)
				for _, m := range subVariable.FindAllStringSubmatch(src, -1) {
					name := m[1]
					if strings.HasPrefix(name, "!") || vars[name] != nil {
						continue
					}
					if res, attr, ok := strings.Cut(name, "."); ok {
						if c.types[res] == "" || !slices.Contains(getAttributes[c.types[res]], attr) {
							c.p.addf("%s: unresolved ${%s} in Fn::Sub", where, name)
						}
						dep(res)
						continue
					}
					if !resolves(name) {
						c.p.addf("%s: unresolved ${%s} in Fn::Sub", where, name)
					}
					dep(name)
				}
			case "Fn::If", "Condition":
				name := ""
				if args, ok := arg.([]any); ok && len(args) == 3 {
					name, _ = args[0].(string)
				} else if s, ok := arg.(string); ok && fn == "Condition" {
					name = s
				}
				if conditions[name] == nil {
					c.p.addf("%s: unknown condition %q", where, name)
				}
			}
		})
	}
	for _, name := range sortedKeys(c.resource) {
		r := c.resource[name]
		props := r["Properties"]
		if c.types[name] == "AWS::Serverless::Function" {
			// An S3 event's Bucket is no dependency of the function: SAM
			// turns it into the bucket's notification configuration, which
			// depends on the function (the edge added below).
			props = deepCopy(props)
			events, _ := lookup(props, "Events").(map[string]any)
			for _, evName := range sortedKeys(events) {
				if ev := events[evName]; lookup(ev, "Type") == "S3" {
					if p, ok := lookup(ev, "Properties").(map[string]any); ok {
						check("Resources."+name+".Events."+evName, "", p["Bucket"])
						delete(p, "Bucket")
					}
				}
			}
		}
		check("Resources."+name, name, props)
		if cond, ok := r["Condition"].(string); ok && conditions[cond] == nil {
			c.p.addf("Resources.%s: unknown condition %q", name, cond)
		}
		var dependsOn []string
		switch d := r["DependsOn"].(type) {
		case string:
			dependsOn = []string{d}
		case []any:
			for _, e := range d {
				s, _ := e.(string)
				dependsOn = append(dependsOn, s)
			}
		}
		for _, d := range dependsOn {
			if c.types[d] == "" {
				c.p.addf("Resources.%s: DependsOn %q: no such resource", name, d)
			}
			check("", name, map[string]any{"Ref": d}) // an edge of the graph
		}
		// The edges SAM adds: a bucket's notification configuration names
		// the function (and waits for its permission); a Function URL
		// belongs to its function.
		if c.types[name] == "AWS::Serverless::Function" {
			events, _ := lookup(r, "Properties", "Events").(map[string]any)
			for _, ev := range events {
				if lookup(ev, "Type") == "S3" {
					if b, ok := refTo(lookup(ev, "Properties", "Bucket")); ok {
						check("", b, map[string]any{"Ref": name})
					}
				}
			}
			if c.types[name+"Url"] != "" {
				check("", name+"Url", map[string]any{"Ref": name})
			}
		}
	}
	for _, name := range sortedKeys(conditionsOrEmpty(conditions)) {
		check("Conditions."+name, "", conditions[name])
	}
	outputs, _ := c.st.raw["Outputs"].(map[string]any)
	for _, name := range sortedKeys(conditionsOrEmpty(outputs)) {
		check("Outputs."+name, "", outputs[name])
	}
	if cycle := findCycle(deps); cycle != nil {
		c.p.addf("dependency cycle: %s (CloudFormation refuses the stack)", strings.Join(cycle, " -> "))
	}
}

func deepCopy(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

func conditionsOrEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// findCycle returns a cycle of the graph, first node repeated at the end.
func findCycle(deps map[string]map[string]bool) []string {
	const (
		unseen = iota
		active
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(string) []string
	visit = func(n string) []string {
		state[n] = active
		stack = append(stack, n)
		for _, m := range sortedKeys(deps[n]) {
			switch state[m] {
			case active:
				i := slices.Index(stack, m)
				return append(slices.Clone(stack[i:]), m)
			case unseen:
				if c := visit(m); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
		return nil
	}
	for _, n := range sortedKeys(deps) {
		if state[n] == unseen {
			if c := visit(n); c != nil {
				return c
			}
		}
	}
	return nil
}

// numberParam returns the parameter a raw value Refs, with its default,
// when it is a Number parameter.
func (c *templateChecker) numberParam(where string, v any) (name string, def float64, ok bool) {
	name, isRef := refTo(v)
	p := c.params[name]
	if !isRef || p == nil {
		c.p.addf("%s: want a Ref to a Number parameter (got %s)", where, exprString(v))
		return "", 0, false
	}
	if p["Type"] != "Number" {
		c.p.addf("%s: parameter %s is %v, want Number", where, name, p["Type"])
		return "", 0, false
	}
	def, isNum := toFloat(p["Default"])
	if !isNum {
		c.p.addf("%s: parameter %s needs a numeric Default", where, name)
		return "", 0, false
	}
	return name, def, true
}

// paramBounds returns a Number parameter's MinValue and MaxValue.
func (c *templateChecker) paramBounds(name string) (lo, hi float64, hasLo, hasHi bool) {
	lo, hasLo = toFloat(c.params[name]["MinValue"])
	hi, hasHi = toFloat(c.params[name]["MaxValue"])
	return
}

// sized checks a Number parameter's default and bounds against a range.
func (c *templateChecker) sized(where string, v any, minDefault, min, max float64, why string) (string, float64) {
	name, def, ok := c.numberParam(where, v)
	if !ok {
		return "", 0
	}
	lo, hi, hasLo, hasHi := c.paramBounds(name)
	if def < minDefault || def > max {
		c.p.addf("%s: parameter %s default %g outside [%g, %g] (%s)", where, name, def, minDefault, max, why)
	}
	if !hasLo || lo < min {
		c.p.addf("%s: parameter %s needs MinValue >= %g (%s)", where, name, min, why)
	}
	if !hasHi || hi > max {
		c.p.addf("%s: parameter %s needs MaxValue <= %g (%s)", where, name, max, why)
	}
	return name, def
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case string:
		var f float64
		_, err := fmt.Sscan(n, &f)
		return f, err == nil
	}
	return 0, false
}

// sqsEventProperties extends goformation's SQS event, which lacks
// FunctionResponseTypes (its union decoder then drops the whole event).
type sqsEventProperties struct {
	serverless.Function_SQSEvent
	FunctionResponseTypes          []string       `json:"FunctionResponseTypes,omitempty"`
	MaximumBatchingWindowInSeconds *int           `json:"MaximumBatchingWindowInSeconds,omitempty"`
	ScalingConfig                  map[string]any `json:"ScalingConfig,omitempty"`
}

func decodeStrict(v any, dst any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(dst)
}

// markerTarget reads "ref:Name" / "getatt:Name.Attr" back.
func markerTarget(s, kind string) string {
	t, ok := strings.CutPrefix(s, kind+":")
	if !ok {
		return ""
	}
	return t
}

func (c *templateChecker) checkFunction() {
	fns := c.st.typed.GetAllServerlessFunctionResources()
	if len(fns) != 1 {
		c.p.addf("want exactly one AWS::Serverless::Function, got %d", len(fns))
		return
	}
	var fnName string
	var fn *serverless.Function
	for fnName, fn = range fns {
	}
	where := "Resources." + fnName
	rawProps, _ := lookup(c.resource[fnName], "Properties").(map[string]any)

	// Container image, built by `sam build` from infra/Dockerfile.
	if fn.PackageType == nil || *fn.PackageType != "Image" {
		c.p.addf("%s: PackageType: want Image", where)
	}
	if !slices.Equal(fn.Architectures, []string{"x86_64"}) {
		c.p.addf("%s: Architectures: want [x86_64] (the simd kernels are amd64), got %v", where, fn.Architectures)
	}
	c.checkImageMetadata(where, fn.AWSCloudFormationMetadata, rawProps)

	// Sizes, wired to parameters.
	c.sized(where+".MemorySize", rawProps["MemorySize"], fp32RSSMB, fp16RSSMB, lambdaMaxMemoryMB,
		"a 512x512 generation peaks at ~4.1 GiB RSS with fp16 weights, ~6.7 GiB with fp32 (plus headroom); CPU Lambda stops at 10240 MB")
	timeoutParam, timeout := c.sized(where+".Timeout", rawProps["Timeout"], minTimeoutS, 1, lambdaMaxTimeoutS,
		"a generation takes minutes on CPU; Lambda stops at 900 s")
	c.sized(where+".EphemeralStorage.Size", lookup(rawProps, "EphemeralStorage", "Size"), 2*bundleMB, lambdaMinEphemeralMB, lambdaMaxEphemeralMB,
		"a bundle fetched at init (~2.7 GB) and its archive must fit in /tmp")
	if fn.MemorySize == nil || fn.Timeout == nil || fn.EphemeralStorage == nil {
		c.p.addf("%s: MemorySize, Timeout and EphemeralStorage must all be set", where)
	}
	reserved := rawProps["ReservedConcurrentExecutions"]
	reservedWired := false
	for name, p := range c.params {
		if p["Type"] == "Number" && containsRef(reserved, name) {
			reservedWired = true
		}
	}
	if !reservedWired {
		c.p.addf("%s.ReservedConcurrentExecutions: want it wired to a Number parameter (got %s)", where, exprString(reserved))
	}

	// Function URL: IAM by default, a parameter to choose.
	if fn.FunctionUrlConfig == nil {
		c.p.addf("%s: no FunctionUrlConfig", where)
	} else {
		auth := lookup(rawProps, "FunctionUrlConfig", "AuthType")
		name, ok := refTo(auth)
		p := c.params[name]
		allowed := fmt.Sprint(p["AllowedValues"])
		if !ok || p == nil || p["Default"] != "AWS_IAM" || allowed != "[AWS_IAM NONE]" && allowed != "[NONE AWS_IAM]" {
			c.p.addf("%s.FunctionUrlConfig.AuthType: want a Ref to a parameter with Default AWS_IAM and AllowedValues [AWS_IAM, NONE] (got %s)", where, exprString(auth))
		}
		if mode := fn.FunctionUrlConfig.InvokeMode; mode != nil && *mode != "BUFFERED" {
			c.p.addf("%s.FunctionUrlConfig.InvokeMode %s: the handler answers buffered responses only", where, *mode)
		}
	}

	// Events: the SQS queue and the S3 uploads.
	queue, bucket, inputPrefixParam := c.checkEvents(where, fn, rawProps)

	// Environment: names the binary reads, wired to the same resources.
	vars := map[string]string{}
	if fn.Environment != nil {
		vars = fn.Environment.Variables
	}
	rawVars, _ := lookup(rawProps, "Environment", "Variables").(map[string]any)
	for _, name := range sortedKeys(vars) {
		if !c.f.code.envNames[name] {
			c.p.addf("%s: environment variable %s is unknown to the binary (it reads %v)", where, name, sortedKeys(c.f.code.envNames))
		}
	}
	for _, name := range []string{"CONTROLFN_BUNDLE", "CONTROLFN_INPUT_PREFIX", "CONTROLFN_OUTPUT_BUCKET", "CONTROLFN_OUTPUT_PREFIX"} {
		if _, ok := rawVars[name]; !ok {
			c.p.addf("%s: environment variable %s is not set", where, name)
		}
	}
	outputPrefixParam, _ := refTo(rawVars["CONTROLFN_OUTPUT_PREFIX"])
	if c.params[outputPrefixParam] == nil {
		c.p.addf("%s: CONTROLFN_OUTPUT_PREFIX: want a Ref to a parameter", where)
	}
	if p, _ := refTo(rawVars["CONTROLFN_INPUT_PREFIX"]); inputPrefixParam != "" && p != inputPrefixParam {
		c.p.addf("%s: CONTROLFN_INPUT_PREFIX must Ref %s, the prefix of the S3 events", where, inputPrefixParam)
	}
	if in, out := fmt.Sprint(c.params[inputPrefixParam]["Default"]), fmt.Sprint(c.params[outputPrefixParam]["Default"]); in != "" && out != "" &&
		(strings.HasPrefix(in, out) || strings.HasPrefix(out, in)) {
		c.p.addf("Parameters: input prefix %q and output prefix %q overlap: outputs would trigger generations, or inputs be taken for outputs", in, out)
	}
	bucketName := ""
	if bucket != "" {
		bucketName, _ = subString(lookup(c.resource[bucket], "Properties", "BucketName"))
		if bucketName == "" {
			c.p.addf("Resources.%s.BucketName: want an Fn::Sub of parameters and pseudo parameters, so that policies can name the bucket without referencing it", bucket)
		}
		for _, name := range []string{"CONTROLFN_OUTPUT_BUCKET", "CONTROLFN_INPUT_BUCKET"} {
			if s, _ := subString(rawVars[name]); rawVars[name] != nil && s != bucketName {
				c.p.addf("%s: %s is %s, want the name of %s (%s)", where, name, exprString(rawVars[name]), bucket, bucketName)
			}
		}
	}
	c.checkBundleLocation(where, vars["CONTROLFN_BUNDLE"], rawVars["CONTROLFN_BUNDLE"])

	// The queue: redrive to a dead-letter queue, visibility over the timeout.
	if queue != "" {
		c.checkQueue(queue, timeoutParam, timeout)
	}
	// The role: least privilege.
	c.checkRole(where, fnName, fn, rawProps, queue, bucketName, inputPrefixParam, outputPrefixParam)
	// Outputs.
	c.checkOutputs(fnName, queue, bucket)
}

func (c *templateChecker) checkImageMetadata(where string, meta map[string]any, rawProps map[string]any) {
	if rawProps["ImageUri"] != nil {
		return // a prebuilt image
	}
	if meta == nil {
		c.p.addf("%s: no ImageUri and no Metadata (Dockerfile, DockerContext, DockerTag) for sam build", where)
		return
	}
	dockerfile, _ := meta["Dockerfile"].(string)
	dockerContext, _ := meta["DockerContext"].(string)
	if dockerfile == "" || dockerContext == "" || meta["DockerTag"] == nil {
		c.p.addf("%s.Metadata: want Dockerfile, DockerContext and DockerTag", where)
		return
	}
	if dockerContext != "." {
		c.p.addf("%s.Metadata.DockerContext %q: the build needs the repository root (go.mod, cmd/)", where, dockerContext)
	}
	if _, err := os.Stat(filepath.Join(c.f.root, dockerContext, dockerfile)); err != nil {
		c.p.addf("%s.Metadata.Dockerfile: %v", where, err)
	}
	df, err := parseDockerfile(c.f.dockerfile)
	if err != nil {
		c.p.addf("%s.Metadata: the Dockerfile does not parse: %v", where, err)
		return
	}
	target := df.stages[len(df.stages)-1]
	if name, ok := meta["DockerBuildTarget"].(string); ok {
		if target = df.stage(name); target == nil {
			c.p.addf("%s.Metadata.DockerBuildTarget %q: no such stage in %s", where, name, dockerfile)
			return
		}
	}
	if root := df.root(target); root != lambdaBaseImage {
		c.p.addf("%s.Metadata: target stage %s derives from %s, not the Lambda base %s", where, target.name, root, lambdaBaseImage)
	}
	args, _ := meta["DockerBuildArgs"].(map[string]any)
	for _, name := range sortedKeys(args) {
		declared := df.args[name] != ""
		for _, st := range df.chain(target) {
			for _, ins := range st.all("ARG") {
				declared = declared || strings.Split(ins.args, "=")[0] == name
			}
		}
		if !declared {
			c.p.addf("%s.Metadata.DockerBuildArgs: %s is not an ARG of stage %s", where, name, target.name)
		}
	}
}

// checkBundleLocation: by default the function loads the bundle the image
// has; an s3:// location (fetched at init) is the documented alternative.
func (c *templateChecker) checkBundleLocation(where, resolved string, raw any) {
	df, err := parseDockerfile(c.f.dockerfile)
	if err != nil || raw == nil {
		return
	}
	target := df.stages[len(df.stages)-1]
	for _, fn := range c.st.typed.GetAllServerlessFunctionResources() {
		if name, ok := fn.AWSCloudFormationMetadata["DockerBuildTarget"].(string); ok && df.stage(name) != nil {
			target = df.stage(name)
		}
	}
	if baked, _ := df.env(target, "CONTROLFN_BUNDLE"); baked != "" && resolved != baked {
		c.p.addf("%s: CONTROLFN_BUNDLE defaults to %q, but image target %s has its bundle at %q", where, resolved, target.name, baked)
	}
	if !strings.Contains(exprString(raw), "s3://") {
		c.p.addf("%s: CONTROLFN_BUNDLE: want the s3:// alternative (a bundle fetched at init) wired to parameters", where)
	}
}

// checkEvents returns the queue of the SQS event, the bucket of the S3
// events and the parameter of their key prefix.
func (c *templateChecker) checkEvents(where string, fn *serverless.Function, rawProps map[string]any) (queue, bucket, prefixParam string) {
	resolvedEvents, _ := lookup(c.st.resolved, "Resources", strings.TrimPrefix(where, "Resources."), "Properties", "Events").(map[string]any)
	suffixes := map[string]bool{}
	sqsEvents := 0
	for _, name := range sortedKeys(fn.Events) {
		ev := fn.Events[name]
		at := where + ".Events." + name
		switch ev.Type {
		case "SQS":
			sqsEvents++
			var props sqsEventProperties
			if err := decodeStrict(lookup(resolvedEvents, name, "Properties"), &props); err != nil {
				c.p.addf("%s: SQS properties: %v", at, err)
				continue
			}
			q := markerTarget(props.Queue, "getatt")
			res, attr, _ := strings.Cut(q, ".")
			if attr != "Arn" || c.types[res] != "AWS::SQS::Queue" {
				c.p.addf("%s: Queue: want !GetAtt <queue in this template>.Arn (got %q)", at, props.Queue)
			} else {
				queue = res
			}
			if !slices.Contains(props.FunctionResponseTypes, "ReportBatchItemFailures") {
				c.p.addf("%s: FunctionResponseTypes must include ReportBatchItemFailures (the handler reports failed messages in batchItemFailures)", at)
			}
			if props.BatchSize != nil {
				c.sized(at+".BatchSize", lookup(rawProps, "Events", name, "Properties", "BatchSize"), 1, 1, 10,
					"one generation at a time per instance; messages of a batch wait for each other")
			}
		case "S3":
			s3 := (*serverless.Function_S3Event)(nil)
			if ev.Properties != nil {
				s3 = ev.Properties.S3Event
			}
			if s3 == nil {
				c.p.addf("%s: goformation could not read the S3 event's properties", at)
				continue
			}
			b := markerTarget(s3.Bucket, "ref")
			if c.types[b] != "AWS::S3::Bucket" {
				c.p.addf("%s: Bucket: want !Ref <bucket in this template> (SAM wires notifications only there), got %q", at, s3.Bucket)
			} else if bucket != "" && b != bucket {
				c.p.addf("%s: Bucket %s: the S3 events name two buckets (%s)", at, b, bucket)
			} else {
				bucket = b
			}
			var kinds []string
			if s3.Events != nil {
				if s3.Events.String != nil {
					kinds = []string{*s3.Events.String}
				} else if s3.Events.StringArray != nil {
					kinds = *s3.Events.StringArray
				}
			}
			if !slices.ContainsFunc(kinds, func(k string) bool { return strings.HasPrefix(k, "s3:ObjectCreated:") }) {
				c.p.addf("%s: Events %v: want s3:ObjectCreated:*", at, kinds)
			}
			rules := map[string][]any{}
			rawRules, _ := lookup(rawProps, "Events", name, "Properties", "Filter", "S3Key", "Rules").([]any)
			for _, r := range rawRules {
				kind := strings.ToLower(fmt.Sprint(lookup(r, "Name")))
				rules[kind] = append(rules[kind], lookup(r, "Value"))
			}
			if len(rules["prefix"]) != 1 || len(rules["suffix"]) != 1 {
				c.p.addf("%s: Filter: want one prefix and one suffix rule (got %d and %d)", at, len(rules["prefix"]), len(rules["suffix"]))
				continue
			}
			p, ok := refTo(rules["prefix"][0])
			if !ok || c.params[p] == nil {
				c.p.addf("%s: Filter prefix: want a Ref to the input prefix parameter (got %s)", at, exprString(rules["prefix"][0]))
			} else if prefixParam != "" && p != prefixParam {
				c.p.addf("%s: Filter prefix %s differs from the other S3 events' %s", at, p, prefixParam)
			} else {
				prefixParam = p
			}
			suffix := fmt.Sprint(rules["suffix"][0])
			if !slices.Contains(controlImageSuffixes, suffix) {
				c.p.addf("%s: Filter suffix %q: the handler takes %v", at, suffix, controlImageSuffixes)
			}
			suffixes[suffix] = true
		default:
			c.p.addf("%s: unexpected event type %q", at, ev.Type)
		}
	}
	if sqsEvents != 1 {
		c.p.addf("%s: want one SQS event (the job queue), got %d", where, sqsEvents)
	}
	for _, s := range controlImageSuffixes {
		if !suffixes[s] {
			c.p.addf("%s: no S3 event for suffix %s (the handler takes %v)", where, s, controlImageSuffixes)
		}
	}
	return queue, bucket, prefixParam
}

func (c *templateChecker) checkQueue(queue, timeoutParam string, timeout float64) {
	where := "Resources." + queue
	q, err := c.st.typed.GetSQSQueueWithName(queue)
	if err != nil {
		c.p.addf("%s: %v", where, err)
		return
	}
	rawProps, _ := lookup(c.resource[queue], "Properties", "RedrivePolicy").(map[string]any)
	redrive, _ := q.RedrivePolicy.(map[string]any)
	if redrive == nil {
		c.p.addf("%s: no RedrivePolicy: failed messages would be retried until they expire instead of moving to a dead-letter queue", where)
	} else {
		dlq, attr, _ := strings.Cut(markerTarget(fmt.Sprint(redrive["deadLetterTargetArn"]), "getatt"), ".")
		if attr != "Arn" || c.types[dlq] != "AWS::SQS::Queue" || dlq == queue {
			c.p.addf("%s.RedrivePolicy.deadLetterTargetArn: want !GetAtt <dead-letter queue>.Arn (got %v)", where, redrive["deadLetterTargetArn"])
		} else if d, err := c.st.typed.GetSQSQueueWithName(dlq); err == nil {
			if d.RedrivePolicy != nil {
				c.p.addf("Resources.%s: a dead-letter queue should not redrive further", dlq)
			}
			retention := func(v *int) int {
				if v == nil {
					return 345600 // SQS default, 4 days
				}
				return *v
			}
			if retention(d.MessageRetentionPeriod) <= retention(q.MessageRetentionPeriod) {
				c.p.addf("Resources.%s: MessageRetentionPeriod must exceed %s's: a message keeps its first enqueue time in the dead-letter queue", dlq, queue)
			}
		}
		if _, n, ok := c.numberParam(where+".RedrivePolicy.maxReceiveCount", rawProps["maxReceiveCount"]); ok && n < 5 {
			c.p.addf("%s.RedrivePolicy.maxReceiveCount default %g: want >= 5, throttled receives under reserved concurrency count too", where, n)
		}
	}
	// Lambda refuses a mapping whose queue's visibility timeout is under
	// the function timeout; AWS recommends six times it.
	vis := 30.0
	if q.VisibilityTimeout != nil {
		vis = float64(*q.VisibilityTimeout)
	}
	if vis < 6*timeout {
		c.p.addf("%s.VisibilityTimeout %g s: want >= 6 x the function timeout (%g s)", where, vis, timeout)
	}
	if name, isRef := refTo(lookup(c.resource[queue], "Properties", "VisibilityTimeout")); isRef && timeoutParam != "" {
		lo, _, hasLo, _ := c.paramBounds(name)
		_, hi, _, hasHi := c.paramBounds(timeoutParam)
		if !hasLo || !hasHi || lo < hi {
			c.p.addf("%s.VisibilityTimeout: parameter %s's MinValue must be >= %s's MaxValue, or some allowed timeouts cannot deploy", where, name, timeoutParam)
		}
	}
}

// statement is one IAM statement, normalized.
type statement struct {
	policy    string
	effect    string
	actions   []string
	resources []any
	condition any
}

func statementsOf(policyName string, doc any) []statement {
	var out []statement
	raw := lookup(doc, "Statement")
	list, ok := raw.([]any)
	if !ok && raw != nil {
		list = []any{raw}
	}
	for _, s := range list {
		st := statement{policy: policyName, effect: fmt.Sprint(lookup(s, "Effect")), condition: lookup(s, "Condition")}
		switch a := lookup(s, "Action").(type) {
		case string:
			st.actions = []string{a}
		case []any:
			for _, e := range a {
				st.actions = append(st.actions, fmt.Sprint(e))
			}
		}
		switch r := lookup(s, "Resource").(type) {
		case []any:
			st.resources = r
		case nil:
		default:
			st.resources = []any{r}
		}
		out = append(out, st)
	}
	return out
}

func (c *templateChecker) checkRole(where, fnName string, fn *serverless.Function, rawProps map[string]any, queue, bucketName, inputPrefix, outputPrefix string) {
	if fn.Policies != nil {
		c.p.addf("%s: Policies are ignored by SAM when Role is set; put the statements in the role", where)
	}
	role, attr, ok := getAttOf(rawProps["Role"])
	if !ok || attr != "Arn" || c.types[role] != "AWS::IAM::Role" {
		c.p.addf("%s.Role: want !GetAtt <role in this template>.Arn, so that every permission is visible here (got %s)", where, exprString(rawProps["Role"]))
		return
	}
	at := "Resources." + role
	r, err := c.st.typed.GetIAMRoleWithName(role)
	if err != nil {
		c.p.addf("%s: %v", at, err)
		return
	}
	if len(r.ManagedPolicyArns) > 0 {
		c.p.addf("%s: ManagedPolicyArns %v: managed policies are not scoped to this stack's resources", at, r.ManagedPolicyArns)
	}
	trust, _ := json.Marshal(r.AssumeRolePolicyDocument)
	if !strings.Contains(string(trust), `"lambda.amazonaws.com"`) || !strings.Contains(string(trust), "sts:AssumeRole") {
		c.p.addf("%s: AssumeRolePolicyDocument: want lambda.amazonaws.com to assume it", at)
	}
	var stmts []statement
	rawPolicies, _ := lookup(c.resource[role], "Properties", "Policies").([]any)
	for _, pol := range rawPolicies {
		// A policy may sit in an Fn::If: check both branches.
		candidates := []any{pol}
		if fnName, arg, ok := intrinsic(pol); ok && fnName == "Fn::If" {
			if args, ok := arg.([]any); ok && len(args) == 3 {
				candidates = args[1:]
			}
		}
		for _, cand := range candidates {
			if lookup(cand, "PolicyDocument") != nil {
				stmts = append(stmts, statementsOf(fmt.Sprint(lookup(cand, "PolicyName")), lookup(cand, "PolicyDocument"))...)
			}
		}
	}
	bucketArn := "arn:${AWS::Partition}:s3:::" + bucketName
	fnNameParam, _ := refTo(rawProps["FunctionName"])
	granted := map[string]bool{}
	for _, s := range stmts {
		at := fmt.Sprintf("Resources.%s policy %s", role, s.policy)
		if s.effect != "Allow" {
			continue // a Deny only narrows
		}
		if len(s.resources) == 0 {
			c.p.addf("%s: a statement without Resource", at)
		}
		for _, a := range s.actions {
			if strings.Contains(a, "*") {
				c.p.addf("%s: action %q: name the actions", at, a)
			}
		}
		for _, res := range s.resources {
			sub, isSub := subString(res)
			target, _, isGetAtt := getAttOf(res)
			literal, isLiteral := res.(string)
			if isLiteral && (literal == "*" || strings.HasSuffix(literal, ":*")) {
				c.p.addf("%s: Resource %q: scope it by ARN", at, literal)
			}
			for _, a := range s.actions {
				service, action, _ := strings.Cut(a, ":")
				switch {
				case service == "s3" && isSub && strings.HasPrefix(sub, bucketArn):
					want := map[string]string{"GetObject": bucketArn + "/${" + inputPrefix + "}*", "PutObject": bucketArn + "/${" + outputPrefix + "}*", "ListBucket": bucketArn}[action]
					if want == "" || sub != want {
						c.p.addf("%s: %s on %s: want only GetObject on %s, PutObject on %s, ListBucket on %s", at, a, sub,
							bucketArn+"/${"+inputPrefix+"}*", bucketArn+"/${"+outputPrefix+"}*", bucketArn)
						continue
					}
					if action == "ListBucket" {
						cond, _ := subString(lookup(s.condition, "StringLike", "s3:prefix"))
						if cond != "${"+inputPrefix+"}*" {
							c.p.addf("%s: ListBucket on the image bucket: want Condition StringLike s3:prefix ${%s}*", at, inputPrefix)
							continue
						}
					}
					granted[a] = true
				case service == "s3" && isSub && strings.Contains(sub, ":s3:::${") && c.conditional(s):
					// The bundle bucket, granted only when a bundle is fetched.
				case service == "s3":
					c.p.addf("%s: %s on %s: S3 access must be scoped to the image bucket's prefixes", at, a, exprString(res))
				case service == "sqs":
					if queue == "" {
						continue // reported: no SQS event names a queue
					}
					if !isGetAtt || target != queue {
						c.p.addf("%s: %s on %s: want the job queue %s only", at, a, exprString(res), queue)
						continue
					}
					if !slices.Contains([]string{"ReceiveMessage", "DeleteMessage", "GetQueueAttributes", "ChangeMessageVisibility"}, action) {
						c.p.addf("%s: %s: the event source mapping needs ReceiveMessage, DeleteMessage, GetQueueAttributes only", at, a)
					}
					granted[a] = true
				case service == "logs":
					lg := ""
					if isGetAtt && c.types[target] == "AWS::Logs::LogGroup" {
						lg, _ = subString(lookup(c.resource[target], "Properties", "LogGroupName"))
					}
					if lg == "" || lg != "/aws/lambda/${"+fnNameParam+"}" {
						c.p.addf("%s: %s on %s: want the function's log group (/aws/lambda/${%s})", at, a, exprString(res), fnNameParam)
						continue
					}
					granted[a] = true
				default:
					c.p.addf("%s: %s: the function needs no %s access", at, a, service)
				}
			}
		}
	}
	for _, need := range []string{"s3:GetObject", "s3:PutObject", "s3:ListBucket", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "logs:CreateLogStream", "logs:PutLogEvents"} {
		if !granted[need] {
			c.p.addf("Resources.%s: %s is not granted (scoped as required), the function cannot work", role, need)
		}
	}
}

// conditional reports whether a statement belongs to a policy inside an
// Fn::If; statementsOf loses that, so look the policy up by name.
func (c *templateChecker) conditional(s statement) bool {
	for name := range c.resource {
		for _, pol := range asList(lookup(c.resource[name], "Properties", "Policies")) {
			if fn, arg, ok := intrinsic(pol); ok && fn == "Fn::If" {
				for _, branch := range asList(arg) {
					if fmt.Sprint(lookup(branch, "PolicyName")) == s.policy {
						return true
					}
				}
			}
		}
	}
	return false
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func (c *templateChecker) checkOutputs(fnName, queue, bucket string) {
	outputs, _ := c.st.raw["Outputs"].(map[string]any)
	have := map[string]bool{}
	for _, o := range outputs {
		have[exprString(lookup(o, "Value"))] = true
	}
	want := map[string]any{
		"the function URL": map[string]any{"Fn::GetAtt": fnName + "Url.FunctionUrl"},
		"the function ARN": map[string]any{"Fn::GetAtt": fnName + ".Arn"},
		"the queue URL":    map[string]any{"Ref": queue},
		"the bucket name":  map[string]any{"Ref": bucket},
	}
	if redrive, ok := lookup(c.resource[queue], "Properties", "RedrivePolicy", "deadLetterTargetArn").(map[string]any); ok {
		if dlq, _, ok := getAttOf(redrive); ok {
			want["the dead-letter queue URL"] = map[string]any{"Ref": dlq}
		}
	}
	for _, what := range sortedKeys(want) {
		v := want[what]
		if strings.Contains(exprString(v), `""`) || strings.HasPrefix(exprString(lookup(v, "Fn::GetAtt")), ".") {
			continue // the resource is missing, reported elsewhere
		}
		alt := v
		if s, ok := lookup(v, "Fn::GetAtt").(string); ok {
			res, attr, _ := strings.Cut(s, ".")
			alt = map[string]any{"Fn::GetAtt": []any{res, attr}}
		}
		if !have[exprString(v)] && !have[exprString(alt)] {
			c.p.addf("Outputs: no output gives %s (%s)", what, exprString(v))
		}
	}
}

func loadTemplateFacts(t testing.TB) (templateFacts, []byte) {
	t.Helper()
	root := repoRoot(t)
	f := templateFacts{
		code:       loadCodeFacts(t, root),
		root:       root,
		dockerfile: readFile(t, filepath.Join(root, "infra", "Dockerfile")),
	}
	return f, readFile(t, filepath.Join(root, "template.yaml"))
}

func TestTemplate(t *testing.T) {
	facts, data := loadTemplateFacts(t)
	if p := checkTemplate(data, facts); len(p) > 0 {
		t.Errorf("template.yaml:\n  %s", strings.Join(p, "\n  "))
	}
}

// TestTemplateParsesSAM pins what goformation sees, so that a goformation
// upgrade that changes the SAM model shows here rather than as a checker
// that silently passes.
func TestTemplateParsesSAM(t *testing.T) {
	_, data := loadTemplateFacts(t)
	st, err := parseTemplate(data)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, r := range st.typed.Resources {
		counts[r.AWSCloudFormationType()]++
	}
	for typ, want := range map[string]int{
		"AWS::Serverless::Function": 1, "AWS::SQS::Queue": 2, "AWS::S3::Bucket": 1,
		"AWS::IAM::Role": 1, "AWS::Logs::LogGroup": 1,
	} {
		if counts[typ] != want {
			t.Errorf("%s: %d resources, want %d (all: %v)", typ, counts[typ], want, counts)
		}
	}
	fn, err := st.typed.GetServerlessFunctionWithName("ControlFnFunction")
	if err != nil {
		t.Fatal(err)
	}
	if fn.MemorySize == nil || *fn.MemorySize != lambdaMaxMemoryMB {
		t.Errorf("MemorySize resolves to %v, want the parameter default %d", fn.MemorySize, lambdaMaxMemoryMB)
	}
	if fn.ReservedConcurrentExecutions == nil {
		t.Error("ReservedConcurrentExecutions did not resolve (condition HasReservedConcurrency with the default)")
	}
	if got := fn.Environment.Variables["CONTROLFN_BUNDLE"]; got != "/opt/controlfn/bundle" {
		t.Errorf("CONTROLFN_BUNDLE resolves to %q with the defaults, want the baked bundle", got)
	}
	// goformation v7 reads S3 events but not SQS ones with
	// FunctionResponseTypes: checkEvents decodes those itself.
	if ev := fn.Events["UploadPng"]; ev.Properties == nil || ev.Properties.S3Event == nil {
		t.Error("goformation no longer reads the S3 event")
	}
	if ev := fn.Events["Jobs"]; ev.Type != "SQS" {
		t.Errorf("event Jobs has type %q", ev.Type)
	}
}

// TestTemplateMutations parses mutated copies of template.yaml through the
// same checkTemplate and asserts each mutation is caught.
func TestTemplateMutations(t *testing.T) {
	facts, data := loadTemplateFacts(t)
	fn := []string{"Resources", "ControlFnFunction", "Properties"}
	at := func(path ...string) []string { return append(slices.Clone(fn), path...) }
	roleStmt := func(policy int, path ...string) []string {
		return append([]string{"Resources", "FunctionRole", "Properties", "Policies", fmt.Sprint(policy), "PolicyDocument", "Statement", "0"}, path...)
	}
	tests := []struct {
		name   string
		mutate func(t *testing.T, doc *yaml.Node)
		want   string
	}{
		{"remove the SQS event", del(at("Events", "Jobs")...), "want one SQS event"},
		{"remove the dead-letter queue", del("Resources", "JobDeadLetterQueue"), "unresolved GetAtt JobDeadLetterQueue.Arn"},
		{"remove the redrive policy", del("Resources", "JobQueue", "Properties", "RedrivePolicy"), "no RedrivePolicy"},
		{"remove an S3 event", del(at("Events", "UploadJpg")...), "no S3 event for suffix .jpg"},
		{"remove an S3 suffix rule", del(at("Events", "UploadPng", "Properties", "Filter", "S3Key", "Rules", "1")...), "one prefix and one suffix"},
		{"break a Ref", set("!Ref InputPrefx", at("Events", "UploadPng", "Properties", "Filter", "S3Key", "Rules", "0", "Value")...), `unresolved Ref "InputPrefx"`},
		{"break a Sub variable", set(`!Sub "arn:${AWS::Partition}:s3:::${BucketNamePrefix}-${AWS::AccountId}-${AWS::Region}/${OutputPrefx}*"`, roleStmt(2, "Resource")...), "unresolved ${OutputPrefx}"},
		{"break a GetAtt attribute", set("!GetAtt JobQueue.Url", at("Events", "Jobs", "Properties", "Queue")...), "has no attribute Url"},
		{"no ReportBatchItemFailures", del(at("Events", "Jobs", "Properties", "FunctionResponseTypes")...), "ReportBatchItemFailures"},
		{"S3 read on the whole bucket", set(`!Sub "arn:${AWS::Partition}:s3:::${BucketNamePrefix}-${AWS::AccountId}-${AWS::Region}/*"`, roleStmt(1, "Resource")...), "s3:GetObject on"},
		{"SQS on every queue", set(`"*"`, roleStmt(3, "Resource")...), `Resource "*"`},
		{"wildcard action", set("sqs:*", roleStmt(3, "Action")...), `action "sqs:*"`},
		{"managed policy", set("[arn:aws:iam::aws:policy/AmazonS3FullAccess]", "Resources", "FunctionRole", "Properties", "ManagedPolicyArns"), "ManagedPolicyArns"},
		{"role names the bucket: cycle", set("!GetAtt ImageBucket.Arn", roleStmt(2, "Resource")...), "dependency cycle"},
		{"public URL by default", set("NONE", "Parameters", "FunctionUrlAuthType", "Default"), "Default AWS_IAM"},
		{"URL auth not a parameter", set("NONE", at("FunctionUrlConfig", "AuthType")...), "FunctionUrlConfig.AuthType"},
		{"timeout over Lambda's limit", set("1200", "Parameters", "TimeoutSeconds", "Default"), "outside [300, 900]"},
		{"memory under the model", set("2048", "Parameters", "MemorySize", "Default"), "MemorySize: parameter MemorySize default 2048"},
		{"memory hard-coded", set("10240", at("MemorySize")...), "MemorySize: want a Ref"},
		{"reserved concurrency hard-coded", set("4", at("ReservedConcurrentExecutions")...), "ReservedConcurrentExecutions"},
		{"no ephemeral storage for a fetched bundle", set("512", "Parameters", "EphemeralStorageSize", "Default"), "EphemeralStorage.Size"},
		{"visibility under the timeout", set("600", "Parameters", "QueueVisibilityTimeout", "Default"), "VisibilityTimeout"},
		{"zip package", set("Zip", at("PackageType")...), "PackageType"},
		{"unknown environment variable", rename("CONTROLFN_BUNDEL", at("Environment", "Variables", "CONTROLFN_BUNDLE")...), "CONTROLFN_BUNDEL is unknown"},
		{"output prefix under the input prefix", set("input/out/", "Parameters", "OutputPrefix", "Default"), "overlap"},
		{"no such Docker target", set("lamda", "Resources", "ControlFnFunction", "Metadata", "DockerBuildTarget"), `DockerBuildTarget "lamda"`},
		{"Docker target not a Lambda image", set("edge", "Resources", "ControlFnFunction", "Metadata", "DockerBuildTarget"), "not the Lambda base"},
		{"remove the function URL output", del("Outputs", "FunctionUrl"), "no output gives the function URL"},
		{"remove the Transform", del("Transform"), "Transform"},
		{"S3 event on a foreign bucket", set("my-bucket", at("Events", "UploadJpeg", "Properties", "Bucket")...), "Bucket: want !Ref"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var doc yaml.Node
			if err := yaml.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			tc.mutate(t, &doc)
			mutated, err := yaml.Marshal(&doc)
			if err != nil {
				t.Fatal(err)
			}
			expectProblem(t, checkTemplate(mutated, facts), tc.want)
		})
	}
}
