//go:build tools

// Package tools pins InfluxDB OSS 1.8.10 so that `go build github.com/influxdata/influxdb/cmd/influxd`
// builds it with the dependency versions raised in go.mod.
package tools

import _ "github.com/influxdata/influxdb/cmd/influxd"
