package artifacts

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
)

// Summary describes the manifest in a few aligned lines for people: build,
// dtype, buckets, components with their tensor counts and sizes, LoRAs and
// the total size. It shows hashes shortened to 12 digits.
func (m *Manifest) Summary() string { return m.summary("") }

// summary starts with a "bundle" line when dir is set.
func (m *Manifest) summary(dir string) string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
	line := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }

	var total int64
	for _, f := range m.Files {
		total += f.Size
	}
	buckets := make([]string, len(m.Buckets))
	for i, b := range m.Buckets {
		buckets[i] = b.String()
	}
	if dir != "" {
		line("bundle\t%s", dir)
	}
	line("build\t%s", m.BuildID)
	line("format\t%s", m.FormatVersion)
	line("created\t%s", m.Created.UTC().Format(time.RFC3339))
	line("tool\t%s", m.ToolVersion)
	line("dtype\t%s", m.DType)
	line("buckets\t%s (width x height x batch)", strings.Join(buckets, ", "))
	line("size\t%s in %d files", formatBytes(total), len(m.Files))
	tw.Flush()

	fmt.Fprintf(&sb, "components (%d):\n", len(m.Components))
	for _, c := range m.Components {
		fmt.Fprintf(tw, "  %s\t%s\t%d tensors\t%s\t%s\n", c.Name, c.Kind, c.Tensors, formatBytes(c.Bytes), c.Weights)
	}
	tw.Flush()

	if len(m.Programs) == 0 {
		sb.WriteString("programs: none (traced at cold start)\n")
	} else {
		fmt.Fprintf(&sb, "programs (%d, StableHLO):\n", len(m.Programs))
		sizes := make(map[string]int64, len(m.Files))
		for _, f := range m.Files {
			sizes[f.Path] = f.Size
		}
		for _, p := range m.Programs {
			bs := make([]string, len(p.Buckets))
			for i, b := range p.Buckets {
				bs[i] = b.String()
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\tsha256 %s\tbuckets %s\n", p.Name, p.File, formatBytes(sizes[p.File]), short(p.SHA256), strings.Join(bs, ", "))
		}
		tw.Flush()
	}

	fmt.Fprintf(&sb, "sources (%d):\n", len(m.Sources))
	for _, s := range m.Sources {
		fmt.Fprintf(tw, "  %s\t%s\t%s\tsha256 %s\n", s.Role, s.Path, formatBytes(s.Size), short(s.SHA256))
	}
	tw.Flush()

	if len(m.LoRAs) == 0 {
		sb.WriteString("loras: none\n")
		return sb.String()
	}
	fmt.Fprintf(&sb, "loras (%d):\n", len(m.LoRAs))
	for _, l := range m.LoRAs {
		fmt.Fprintf(tw, "  %s\tscale %g\t%s\tsha256 %s\n", l.File, l.Scale, l.Format, short(l.SHA256))
	}
	tw.Flush()
	return sb.String()
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

// formatBytes prints a size in binary units with one decimal.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	value, exp := float64(n)/unit, 0
	for value >= unit && exp < 4 {
		value /= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", value, "KMGTP"[exp])
}
