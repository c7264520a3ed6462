package main

import (
	"errors"
	"log/slog"

	"github.com/ipoibd/ipoibd"
)

func startTUN(name string, ifc *ipoibd.Interface, log *slog.Logger) (way, error) {
	return nil, errors.New("--tun: not yet")
}
