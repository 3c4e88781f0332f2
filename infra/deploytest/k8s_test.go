package deploytest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// k8sObject is one YAML document of infra/k8s.
type k8sObject struct {
	file string
	obj  map[string]any
}

func (o k8sObject) kind() string { return str(o.obj["kind"]) }
func (o k8sObject) name() string { return str(lookup(o.obj, "metadata", "name")) }
func (o k8sObject) String() string {
	return fmt.Sprintf("%s: %s/%s", o.file, o.kind(), o.name())
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// parseK8s decodes every document of every file (name -> contents).
func parseK8s(files map[string][]byte) ([]k8sObject, error) {
	var out []k8sObject
	for _, name := range sortedKeys(files) {
		dec := yaml.NewDecoder(bytes.NewReader(files[name]))
		for {
			var obj map[string]any
			err := dec.Decode(&obj)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if obj != nil {
				out = append(out, k8sObject{file: name, obj: obj})
			}
		}
	}
	return out, nil
}

// kubeQuantity parses the quantities we use (4, 500m, 6Gi, 512Mi, 1G)
// into a base unit (cores or bytes).
func kubeQuantity(v any) (float64, error) {
	s := str(v)
	suffixes := []struct {
		s string
		m float64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"m", 1e-3}}
	mult := 1.0
	for _, suf := range suffixes {
		if n, ok := strings.CutSuffix(s, suf.s); ok {
			s, mult = n, suf.m
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("quantity %q", str(v))
	}
	return f * mult, nil
}

var promMetric = regexp.MustCompile(`\b(controlfn_[a-z0-9_]+)`)

// checkK8s checks the edge deployment: object shapes, the wiring between
// objects, and their agreement with the server's routes and metrics and
// with the edge image.
func checkK8s(files map[string][]byte, code codeFacts, edge edgeFacts) problems {
	var p problems
	objs, err := parseK8s(files)
	if err != nil {
		p.addf("YAML: %v", err)
		return p
	}
	byKind := map[string][]k8sObject{}
	for _, o := range objs {
		byKind[o.kind()] = append(byKind[o.kind()], o)
		if o.obj["apiVersion"] == nil || o.kind() == "" {
			p.addf("%s: want apiVersion and kind", o)
		}
		if o.kind() != "Kustomization" && o.name() == "" {
			p.addf("%s: no metadata.name", o)
		}
	}

	// kustomization: lists every file, and only existing ones.
	namespace := ""
	if ks := byKind["Kustomization"]; len(ks) != 1 {
		p.addf("want one kustomization.yaml, got %d", len(ks))
	} else {
		k := ks[0]
		namespace = str(k.obj["namespace"])
		listed := map[string]bool{k.file: true}
		for _, r := range asList(k.obj["resources"]) {
			if files[str(r)] == nil {
				p.addf("%s: resource %s does not exist", k, r)
			}
			listed[str(r)] = true
		}
		for _, f := range sortedKeys(files) {
			if !listed[f] {
				p.addf("%s: %s is not in resources (kubectl apply -k would skip it)", k, f)
			}
		}
	}
	for _, o := range objs {
		if ns := str(lookup(o.obj, "metadata", "namespace")); o.kind() != "Namespace" && o.kind() != "Kustomization" && ns != namespace {
			p.addf("%s: namespace %q, want the kustomization's %q", o, ns, namespace)
		}
	}
	if !slices.ContainsFunc(byKind["Namespace"], func(o k8sObject) bool { return o.name() == namespace }) {
		p.addf("no Namespace %q", namespace)
	}

	// Deployment.
	deps := byKind["Deployment"]
	if len(deps) != 1 {
		p.addf("want one Deployment, got %d", len(deps))
		return p
	}
	d := deps[0]
	if d.obj["apiVersion"] != "apps/v1" {
		p.addf("%s: apiVersion %v, want apps/v1", d, d.obj["apiVersion"])
	}
	podLabels, _ := lookup(d.obj, "spec", "template", "metadata", "labels").(map[string]any)
	matchLabels, _ := lookup(d.obj, "spec", "selector", "matchLabels").(map[string]any)
	if len(matchLabels) == 0 || !subset(matchLabels, podLabels) {
		p.addf("%s: spec.selector.matchLabels %v must be non-empty and match the pod labels %v", d, matchLabels, podLabels)
	}
	pod, _ := lookup(d.obj, "spec", "template", "spec").(map[string]any)
	if grace, _ := toFloat(pod["terminationGracePeriodSeconds"]); grace < 330 {
		p.addf("%s: terminationGracePeriodSeconds %v: want >= 330, the server's shutdown wait for a running generation (5 min + 30 s)", d, pod["terminationGracePeriodSeconds"])
	}
	if str(lookup(pod, "nodeSelector", "kubernetes.io/arch")) != "amd64" {
		p.addf("%s: want nodeSelector kubernetes.io/arch: amd64 (the simd kernels are amd64)", d)
	}
	volumes := map[string]map[string]any{}
	for _, v := range asList(pod["volumes"]) {
		vm, _ := v.(map[string]any)
		volumes[str(vm["name"])] = vm
	}
	containers := asList(pod["containers"])
	if len(containers) != 1 {
		p.addf("%s: want one container, got %d", d, len(containers))
		return p
	}
	ctr, _ := containers[0].(map[string]any)
	at := fmt.Sprintf("%s container %s", d, str(ctr["name"]))
	if !strings.Contains(str(ctr["image"]), "controlfn-edge") {
		p.addf("%s: image %v, want the edge image (docker build --target edge)", at, ctr["image"])
	}

	// The command: controlfn serve --bundle DIR --addr HOST:PORT.
	var argv []string
	for _, a := range append(asList(ctr["command"]), asList(ctr["args"])...) {
		argv = append(argv, str(a))
	}
	if len(argv) < 2 || argv[0] != edge.binary || argv[1] != "serve" {
		p.addf("%s: runs %v, want [%s serve ...] (the edge image's binary)", at, argv, edge.binary)
	}
	flags := map[string]string{}
	for i := 0; i+1 < len(argv); i++ {
		if strings.HasPrefix(argv[i], "--") {
			if k, v, ok := strings.Cut(argv[i], "="); ok {
				flags[k] = v
			} else {
				flags[argv[i]] = argv[i+1]
			}
		}
	}
	ports := map[string]string{} // name and number -> number
	for _, cp := range asList(ctr["ports"]) {
		num := str(lookup(cp, "containerPort"))
		ports[num] = num
		if n := str(lookup(cp, "name")); n != "" {
			ports[n] = num
		}
	}
	if len(ports) == 0 {
		p.addf("%s: no container ports", at)
	}
	_, listen, err := net.SplitHostPort(flags["--addr"])
	if err != nil || ports[listen] == "" {
		p.addf("%s: --addr %q must listen on a container port (%v)", at, flags["--addr"], sortedKeys(ports))
	} else if host, _, _ := net.SplitHostPort(flags["--addr"]); host == "127.0.0.1" || host == "localhost" {
		p.addf("%s: --addr %s: loopback is unreachable from the kubelet and the Service", at, flags["--addr"])
	}
	if !edge.ports[listen] {
		p.addf("%s: port %s is not EXPOSEd by the edge image (%v)", at, listen, sortedKeys(edge.ports))
	}
	bundleMounted := false
	for _, m := range asList(ctr["volumeMounts"]) {
		if str(lookup(m, "mountPath")) == flags["--bundle"] {
			bundleMounted = true
			vol := volumes[str(lookup(m, "name"))]
			if vol == nil {
				p.addf("%s: volumeMount %v names no volume", at, lookup(m, "name"))
			} else if claim := str(lookup(vol, "persistentVolumeClaim", "claimName")); claim != "" &&
				!slices.ContainsFunc(byKind["PersistentVolumeClaim"], func(o k8sObject) bool { return o.name() == claim }) {
				p.addf("%s: volume %v claims %q, which no file defines", at, vol["name"], claim)
			}
		}
	}
	if flags["--bundle"] == "" || !bundleMounted {
		p.addf("%s: --bundle %q must be a mounted volume", at, flags["--bundle"])
	}

	// Probes: the server's routes, on a container port.
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		get := lookup(ctr, probe, "httpGet")
		switch {
		case get == nil:
			p.addf("%s: no %s.httpGet", at, probe)
		case str(lookup(get, "path")) != path || !code.routes[path]:
			p.addf("%s: %s path %v, want %s (server routes: %v)", at, probe, lookup(get, "path"), path, sortedKeys(code.routes))
		case ports[str(lookup(get, "port"))] != listen:
			p.addf("%s: %s port %v is not the port the server listens on (%s)", at, probe, lookup(get, "port"), listen)
		}
	}

	// Resources: the model's memory, requests and limits.
	for _, res := range []string{"cpu", "memory"} {
		req, errReq := kubeQuantity(lookup(ctr, "resources", "requests", res))
		lim, errLim := kubeQuantity(lookup(ctr, "resources", "limits", res))
		switch {
		case lookup(ctr, "resources", "requests", res) == nil || lookup(ctr, "resources", "limits", res) == nil:
			p.addf("%s: want resources.requests.%s and resources.limits.%s", at, res, res)
		case errReq != nil || errLim != nil:
			p.addf("%s: resources.%s: %v %v", at, res, errReq, errLim)
		case lim < req:
			p.addf("%s: resources.limits.%s under the request", at, res)
		case res == "memory" && req < fp16RSSMB<<20:
			p.addf("%s: memory request %v under a 512x512 generation's ~4.1 GiB peak plus headroom (fp16 weights)", at, lookup(ctr, "resources", "requests", res))
		}
	}

	// Service: selects the pods, targets the server's port.
	for _, svc := range byKind["Service"] {
		sel, _ := lookup(svc.obj, "spec", "selector").(map[string]any)
		if len(sel) == 0 || !subset(sel, podLabels) {
			p.addf("%s: selector %v does not select the Deployment's pods %v", svc, sel, podLabels)
		}
		for _, sp := range asList(lookup(svc.obj, "spec", "ports")) {
			if ports[str(lookup(sp, "targetPort"))] != listen {
				p.addf("%s: targetPort %v is not the server's port (%s)", svc, lookup(sp, "targetPort"), listen)
			}
		}
	}
	if len(byKind["Service"]) == 0 {
		p.addf("no Service for the Deployment")
	}

	// KEDA: scales this Deployment on metrics the server exposes.
	sos := byKind["ScaledObject"]
	if len(sos) != 1 {
		p.addf("want one KEDA ScaledObject, got %d", len(sos))
		return p
	}
	so := sos[0]
	if so.obj["apiVersion"] != "keda.sh/v1alpha1" {
		p.addf("%s: apiVersion %v, want keda.sh/v1alpha1", so, so.obj["apiVersion"])
	}
	ref := lookup(so.obj, "spec", "scaleTargetRef")
	if str(lookup(ref, "name")) != d.name() || (lookup(ref, "kind") != nil && str(lookup(ref, "kind")) != "Deployment") {
		p.addf("%s: scaleTargetRef %v, want Deployment %s", so, ref, d.name())
	}
	minR, _ := toFloat(lookup(so.obj, "spec", "minReplicaCount"))
	maxR, okMax := toFloat(lookup(so.obj, "spec", "maxReplicaCount"))
	if !okMax || maxR < 1 || minR > maxR {
		p.addf("%s: want 0 <= minReplicaCount <= maxReplicaCount, maxReplicaCount >= 1", so)
	}
	triggers := asList(lookup(so.obj, "spec", "triggers"))
	if len(triggers) == 0 {
		p.addf("%s: no triggers", so)
	}
	for i, tr := range triggers {
		at := fmt.Sprintf("%s trigger %d (%v)", so, i, lookup(tr, "type"))
		md, _ := lookup(tr, "metadata").(map[string]any)
		var required []string
		switch str(lookup(tr, "type")) {
		case "prometheus":
			required = []string{"serverAddress", "query", "threshold"}
			metrics := promMetric.FindAllString(str(md["query"]), -1)
			if len(metrics) == 0 {
				p.addf("%s: the query reads no controlfn_ metric", at)
			}
			for _, m := range metrics {
				if !code.hasMetric(m) {
					p.addf("%s: metric %s is not exposed by the server (%v)", at, m, sortedKeys(code.metrics))
				}
			}
		case "aws-sqs-queue":
			required = []string{"queueURL", "queueLength", "awsRegion"}
		default:
			p.addf("%s: want a prometheus or aws-sqs-queue trigger", at)
		}
		for _, k := range required {
			if str(md[k]) == "" {
				p.addf("%s: no metadata.%s", at, k)
			}
		}
		if th, ok := toFloat(md["threshold"]); md["threshold"] != nil && (!ok || th <= 0) {
			p.addf("%s: threshold %v: want a positive number", at, md["threshold"])
		}
	}
	return p
}

func subset(small, big map[string]any) bool {
	for k, v := range small {
		if bv, ok := big[k]; !ok || str(bv) != str(v) {
			return false
		}
	}
	return true
}

func loadK8sFiles(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, n := range names {
		files[filepath.Base(n)] = readFile(t, n)
	}
	if len(files) == 0 {
		t.Fatalf("no YAML in %s", dir)
	}
	return files
}

func k8sFixtures(t *testing.T) (map[string][]byte, codeFacts, edgeFacts) {
	root := repoRoot(t)
	return loadK8sFiles(t, filepath.Join(root, "infra", "k8s")), loadCodeFacts(t, root),
		dockerEdgeFacts(t, readFile(t, filepath.Join(root, "infra", "Dockerfile")))
}

func TestK8s(t *testing.T) {
	files, code, edge := k8sFixtures(t)
	if p := checkK8s(files, code, edge); len(p) > 0 {
		t.Errorf("infra/k8s:\n  %s", strings.Join(p, "\n  "))
	}
	objs, _ := parseK8s(files)
	for _, o := range objs {
		t.Log(o)
	}
}

// TestK8sMutations proves checkK8s is not vacuous.
func TestK8sMutations(t *testing.T) {
	files, code, edge := k8sFixtures(t)
	tests := []struct {
		name, file, old, new, want string
	}{
		{"readiness on a missing route", "deployment.yaml", "path: /readyz", "path: /ready", "readinessProbe path"},
		{"liveness on readiness", "deployment.yaml", "path: /healthz", "path: /readyz", "livenessProbe path"},
		{"probe on another port", "deployment.yaml", "              port: http\n            periodSeconds: 5", "              port: 9090\n            periodSeconds: 5", "readinessProbe port"},
		{"listen on loopback", "deployment.yaml", `"0.0.0.0:8080"`, `"127.0.0.1:8080"`, "loopback"},
		{"listen elsewhere", "deployment.yaml", `"0.0.0.0:8080"`, `"0.0.0.0:9000"`, "must listen on a container port"},
		{"not serving", "deployment.yaml", `"serve"]`, `"generate"]`, "want [/usr/local/bin/controlfn serve"},
		{"no memory limit", "deployment.yaml", "              cpu: \"8\"\n              memory: 10Gi\n", "              cpu: \"8\"\n", "resources.limits.memory"},
		{"memory under the model", "deployment.yaml", "memory: 7Gi", "memory: 1Gi", "generation"},
		{"short grace period", "deployment.yaml", "terminationGracePeriodSeconds: 360", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds"},
		{"bundle not mounted", "deployment.yaml", "mountPath: /bundle", "mountPath: /models", "must be a mounted volume"},
		{"missing claim", "deployment.yaml", "claimName: controlfn-bundle", "claimName: bundle", `claims "bundle"`},
		{"service selects nothing", "service.yaml", "    app.kubernetes.io/component: edge\n  ports", "    app.kubernetes.io/component: web\n  ports", "does not select"},
		{"service targets another port", "service.yaml", "targetPort: http", "targetPort: 8081", "targetPort"},
		{"scaler targets another deployment", "scaledobject.yaml", "    name: controlfn-edge\n  pollingInterval", "    name: controlfn\n  pollingInterval", "scaleTargetRef"},
		{"scaler on a missing metric", "scaledobject.yaml", "controlfn_generations_in_flight", "controlfn_in_flight", "controlfn_in_flight is not exposed"},
		{"no threshold", "scaledobject.yaml", "        threshold: \"0.7\"\n", "", "no metadata.threshold"},
		{"file left out of kustomize", "kustomization.yaml", "  - scaledobject.yaml\n", "", "scaledobject.yaml is not in resources"},
		{"malformed YAML", "service.yaml", "  type: ClusterIP", "  type: [ClusterIP", "YAML"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mutated := maps.Clone(files)
			mutated[tc.file] = []byte(replaceOnce(t, string(files[tc.file]), tc.old, tc.new))
			expectProblem(t, checkK8s(mutated, code, edge), tc.want)
		})
	}
	t.Run("deployment removed", func(t *testing.T) {
		mutated := maps.Clone(files)
		delete(mutated, "deployment.yaml")
		expectProblem(t, checkK8s(mutated, code, edge), "want one Deployment")
	})
}
