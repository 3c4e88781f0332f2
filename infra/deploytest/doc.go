// Package deploytest checks the deployment files that cannot run here:
// template.yaml (AWS SAM) at the repository root, and infra/Dockerfile,
// infra/k8s and infra/systemd. Nothing is deployed, built or pulled; the
// files are parsed (goformation for the template, YAML for Kubernetes, small
// parsers for the Dockerfile and the systemd unit) and checked against each
// other and against the code they deploy: the environment variables the
// binary reads, the server's routes and metric names, the Go version.
//
// Every checker is a function from file contents to a list of problems, and
// each test also feeds it mutated copies (a removed event, a broken
// reference, a widened policy...) and asserts that the mutation is reported,
// so that a checker that passes everything cannot go unnoticed.
package deploytest
