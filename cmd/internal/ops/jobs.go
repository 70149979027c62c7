package ops

import (
	"errors"
	"fmt"
)

// ErrNoJobsStream means the jobs stream does not exist: no worker has
// created it yet, and there is nowhere to publish jobs to.
var ErrNoJobsStream = errors.New("the jobs stream does not exist")

func noJobsStream(name string) error {
	return fmt.Errorf("%w: %s", ErrNoJobsStream, name)
}
