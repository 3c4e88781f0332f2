package eval

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// DefaultPrompts is the built-in prompt set: everyday scenes a Canny map of
// simple shapes can plausibly become, in words the demo model's vocabulary
// spells with its own merges.
func DefaultPrompts() []string {
	return []string{
		"a photo of a red cube on a wooden table, high quality",
		"a house under a blue sky",
		"a photo of the wooden table",
		"a red house, high quality photo",
	}
}

// ReadPrompts reads a prompt file: one prompt per line; blank lines and
// lines starting with '#' are skipped.
func ReadPrompts(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("eval: prompts: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("eval: prompts %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("eval: prompts %s: no prompts", path)
	}
	return out, nil
}
