//go:build !unix

package loadtest

import (
	"os"
	"os/exec"
)

// Without process groups only the direct child can be stopped; the
// emulator then takes its bootstrap down with it.
func ownGroup(*exec.Cmd) {}

func terminate(cmd *exec.Cmd) error { return cmd.Process.Signal(os.Interrupt) }
func kill(cmd *exec.Cmd) error      { return cmd.Process.Kill() }
