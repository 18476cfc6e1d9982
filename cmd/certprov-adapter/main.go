// Command certprov-adapter is the Certificate Provisioning adapter daemon and its operator
// tools; the command tree is internal/cli (certprov-adapter --help lists it).
package main

import (
	"io"
	"os"

	"github.com/certprov/certprov-adapter/internal/buildinfo"
	"github.com/certprov/certprov-adapter/internal/cli"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return cli.Run(args, cli.Options{Build: buildinfo.Get(), Stdout: stdout, Stderr: stderr})
}
