package deploytest

import (
	"slices"
	"strconv"
	"testing"

	"gopkg.in/yaml.v3"
)

// Mutations edit a parsed YAML document (tags such as !Ref and comments
// survive a round trip through yaml.v3) addressed by a path of mapping keys
// and sequence indices.

// locate returns the collection holding the node at path and the node's
// index in its Content; for a mapping, the key is at index-1. A missing
// last mapping key gives index -1.
func locate(t *testing.T, doc *yaml.Node, path ...string) (*yaml.Node, int) {
	t.Helper()
	cur := doc
	if cur.Kind == yaml.DocumentNode {
		cur = cur.Content[0]
	}
	for n, step := range path {
		last := n == len(path)-1
		switch cur.Kind {
		case yaml.MappingNode:
			i := slices.IndexFunc(cur.Content, func(k *yaml.Node) bool { return k.Value == step })
			for i >= 0 && i%2 == 1 { // a value equal to the key: look further
				j := slices.IndexFunc(cur.Content[i+1:], func(k *yaml.Node) bool { return k.Value == step })
				if j < 0 {
					i = -1
				} else {
					i += 1 + j
				}
			}
			if last {
				if i < 0 {
					return cur, -1
				}
				return cur, i + 1
			}
			if i < 0 {
				t.Fatalf("mutation: no key %q at %v", step, path[:n])
			}
			cur = cur.Content[i+1]
		case yaml.SequenceNode:
			i, err := strconv.Atoi(step)
			if err != nil || i < 0 || i >= len(cur.Content) {
				t.Fatalf("mutation: no index %q at %v", step, path[:n])
			}
			if last {
				return cur, i
			}
			cur = cur.Content[i]
		default:
			t.Fatalf("mutation: %v is a scalar, cannot go to %q", path[:n], step)
		}
	}
	t.Fatal("mutation: empty path")
	return nil, 0
}

// del removes the node at path.
func del(path ...string) func(*testing.T, *yaml.Node) {
	return func(t *testing.T, doc *yaml.Node) {
		t.Helper()
		parent, i := locate(t, doc, path...)
		switch {
		case i < 0:
			t.Fatalf("mutation: nothing to delete at %v", path)
		case parent.Kind == yaml.MappingNode:
			parent.Content = slices.Delete(parent.Content, i-1, i+1)
		default:
			parent.Content = slices.Delete(parent.Content, i, i+1)
		}
	}
}

// set replaces (or adds, for a missing mapping key) the node at path with
// the YAML text value.
func set(value string, path ...string) func(*testing.T, *yaml.Node) {
	return func(t *testing.T, doc *yaml.Node) {
		t.Helper()
		var v yaml.Node
		if err := yaml.Unmarshal([]byte(value), &v); err != nil {
			t.Fatalf("mutation value %q: %v", value, err)
		}
		parent, i := locate(t, doc, path...)
		if i < 0 {
			key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: path[len(path)-1]}
			parent.Content = append(parent.Content, key, v.Content[0])
			return
		}
		parent.Content[i] = v.Content[0]
	}
}

// rename changes the mapping key at path.
func rename(newKey string, path ...string) func(*testing.T, *yaml.Node) {
	return func(t *testing.T, doc *yaml.Node) {
		t.Helper()
		parent, i := locate(t, doc, path...)
		if i < 0 || parent.Kind != yaml.MappingNode {
			t.Fatalf("mutation: no key at %v", path)
		}
		parent.Content[i-1].Value = newKey
	}
}
