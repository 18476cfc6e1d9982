// Command certprov-adapter is the Certificate Provisioning adapter daemon and its operator
// tools; the command tree is internal/cli (certprov-adapter --help lists it).
package main

import (
	"io"
	"os"

	"github.com/certprov/certprov-adapter/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return cli.Run(args, cli.Options{Version: version, Stdout: stdout, Stderr: stderr})
}
