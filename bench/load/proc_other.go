//go:build !linux

package main

import (
	"errors"
	"syscall"
	"time"
)

var errNoProc = errors.New("not available on this system")

func childAttr() *syscall.SysProcAttr { return nil }

func procCPU(int) (time.Duration, error) { return 0, errNoProc }

func loadAvg() ([3]float64, error) { return [3]float64{}, errNoProc }

func cpuModel() string { return "" }
