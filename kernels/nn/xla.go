//go:build xla

package nn

// The XLA backend (PJRT plugins such as the CUDA one) is linked in only
// with -tags xla: it needs cgo and a plugin at run time, which CPU-only
// machines do not have. NewBackend("xla:cuda") then resolves through
// GoMLX's backend registry.
import _ "github.com/gomlx/go-xla/compute/xla"
