package service

import "github.com/controlfn/controlfn/function/pipeline"

// TimeStepParts times the ControlNets and the UNet of one guided step at a
// size as separate programs on the loaded weights (pipeline.TimeStepParts),
// for benchmarks; serving runs them fused.
func (s *Service) TimeStepParts(width, height, images int) (pipeline.StepParts, error) {
	return s.pipeline.TimeStepParts(width, height, images)
}
