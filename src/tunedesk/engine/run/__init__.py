"""The run loop and what surrounds it: events out, control in, the runner, the recorder, checkpoints, the LR finder."""
