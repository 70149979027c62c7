package bench

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// machineBusy is the CPU time all processes have used, from /proc/stat
// (tick-based, so approximate); -1 without it.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "cpu" {
		return -1
	}
	var ticks int64
	// user nice system idle iowait irq softirq steal: user, nice and
	// system are what processes use. Interrupts are left out because the
	// kernel's loopback networking for the bench's own traffic lands there,
	// charged to no process; steal because a virtual machine's own wake-ups
	// cause much of it.
	for _, v := range f[1:4] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return -1
		}
		ticks += n
	}
	// USER_HZ is 100 on every Linux the bench runs on.
	return time.Duration(ticks) * (time.Second / 100)
}

// selfCPU is the bench process's own CPU time (the servers), children not
// included.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
}

// peakRSSKiB reads VmHWM from /proc/self/status: 0 if it cannot.
func peakRSSKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return n
		}
	}
	return 0
}
