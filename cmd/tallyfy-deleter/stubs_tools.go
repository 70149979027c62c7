package main

import "io"

// Placeholders until the operator tools land.

func cmdEnqueue(args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	return 2
}

func cmdDLQ(args []string, getenv func(string) string, stdout, stderr io.Writer) int { return 2 }

func cmdStatus(args []string, getenv func(string) string, stdout, stderr io.Writer) int { return 2 }
