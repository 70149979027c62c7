package main

import "io"

// Placeholder until the bench tool lands.
func cmdBench(args []string, stdout, stderr io.Writer) int { return 2 }
